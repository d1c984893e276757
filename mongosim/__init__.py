"""mongosim: a simulated MongoDB replica set that a real driver (pymongo 4.x) cannot tell from a real one.

Test-only, in-process, no mongod. See mongosim/README.md for what it covers and where a real server differs.
"""

from .model import PROFILES, ManualClock, RealClock
from .replicaset import MemberInfo, MemberSpec, ReplicaSet

__all__ = ["PROFILES", "ManualClock", "MemberInfo", "MemberSpec", "RealClock", "ReplicaSet"]
