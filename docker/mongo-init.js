// One-shot `mongo-init` service of docker-compose.yml: `mongosh --nodb --quiet --norc --file /docker/mongo-init.js`,
// run on every `docker compose up` once the three mongod are up. Idempotent:
//   1. initiate the replica set rs0 unless it already has a config (never re-initiates, never reconfigures);
//   2. wait for a primary, then for every member to be PRIMARY or SECONDARY (initial sync of an empty set takes
//      seconds; the exporter would otherwise start on a RED set);
//   3. on the primary, create the monitoring user, or update its password and roles if it exists: clusterMonitor
//      (replSetGetStatus, replSetGetConfig) and read on local (the oplog probe of the exact lag).
// The monitoring user and password come from the exporter's own config file (the URI of [infra.<label>]), so the
// password lives in one file. Root credentials come from the environment (MONGO_ROOT_USERNAME/PASSWORD).
// Only plain mongosh built-ins are used (connect, adminCommand, getSiblingDB, sleep, print, quit), so a test can
// run this file under node with a fake of them.

const SET_NAME = 'rs0';
const MEMBERS = [
  { _id: 0, host: 'mongo1:27017', priority: 2 },
  { _id: 1, host: 'mongo2:27017', priority: 1 },
  { _id: 2, host: 'mongo3:27017', priority: 1 },
];
const CONFIG_FILE = process.env.REPLICATIONLAG_CONFIG || '/docker/replicationlag.toml';
const INFRA_LABEL = process.env.INFRA_LABEL || 'clusterKeeper';
const MONITORING_ROLES = [
  { role: 'clusterMonitor', db: 'admin' },
  { role: 'read', db: 'local' },
];
const WAIT_STEP_MS = 1000;
const WAIT_STEPS = 120; // two minutes for an election and the initial syncs
const READY_STATES = [1, 2, 7]; // PRIMARY, SECONDARY, ARBITER
const NOT_YET_INITIALIZED = 94;

class InitError extends Error {}

// The user and password of `uri = "mongodb://user:password@..."` in the [infra.<label>] section of the TOML file.
function monitoringCredentials(text, label) {
  let section = null;
  for (const line of text.split(/\r?\n/)) {
    const header = line.match(/^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$/);
    if (header) {
      section = header[1];
      continue;
    }
    const value = line.match(/^\s*uri\s*=\s*(?:"([^"]*)"|'([^']*)')\s*(#.*)?$/);
    if (value && section === `infra.${label}`) {
      const uri = value[1] !== undefined ? value[1] : value[2];
      const parts = uri.match(/^mongodb(?:\+srv)?:\/\/([^:@/]+):([^@/]+)@/);
      if (!parts) {
        throw new InitError(`the uri of [infra.${label}] in ${CONFIG_FILE} has no user:password@`);
      }
      return { user: decodeURIComponent(parts[1]), password: decodeURIComponent(parts[2]) };
    }
  }
  throw new InitError(`no uri = "..." in an [infra.${label}] section of ${CONFIG_FILE}`);
}

function rootUri(hostPort) {
  const user = process.env.MONGO_ROOT_USERNAME;
  const password = process.env.MONGO_ROOT_PASSWORD;
  if (!user || !password) {
    throw new InitError('set MONGO_ROOT_USERNAME and MONGO_ROOT_PASSWORD');
  }
  const auth = `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
  return `mongodb://${auth}@${hostPort}/admin?authSource=admin&directConnection=true`;
}

// mongosh throws a MongoServerError for a failed command; a raw { ok: 0 } reply is treated the same.
function command(db, spec) {
  const reply = db.adminCommand(spec);
  if (reply && reply.ok === 0) {
    const error = new Error(reply.errmsg || 'command failed');
    error.code = reply.code;
    error.codeName = reply.codeName;
    throw error;
  }
  return reply;
}

function isInitiated(db) {
  try {
    command(db, { replSetGetStatus: 1 });
    return true;
  } catch (error) {
    if (error.code === NOT_YET_INITIALIZED || error.codeName === 'NotYetInitialized') {
      return false;
    }
    throw error;
  }
}

// Polls `probe` until it returns something truthy; null after WAIT_STEPS tries.
function waitFor(probe) {
  for (let step = 0; step < WAIT_STEPS; step += 1) {
    const found = probe();
    if (found) {
      return found;
    }
    sleep(WAIT_STEP_MS);
  }
  return null;
}

function main() {
  const fs = require('fs');
  const { user, password } = monitoringCredentials(fs.readFileSync(CONFIG_FILE, 'utf8'), INFRA_LABEL);
  const seed = connect(rootUri(MEMBERS[0].host));

  if (isInitiated(seed)) {
    print(`mongo-init: replica set ${SET_NAME} already initiated`);
  } else {
    command(seed, { replSetInitiate: { _id: SET_NAME, members: MEMBERS } });
    print(`mongo-init: initiated replica set ${SET_NAME} with ${MEMBERS.map((m) => m.host).join(', ')}`);
  }

  const primaryHost = waitFor(() => command(seed, { hello: 1 }).primary);
  if (!primaryHost) {
    throw new InitError(`no primary in ${SET_NAME} after ${(WAIT_STEPS * WAIT_STEP_MS) / 1000} s`);
  }
  const primary = connect(rootUri(primaryHost));
  const ready = waitFor(() => {
    const members = command(primary, { replSetGetStatus: 1 }).members || [];
    return members.length > 0 && members.every((m) => m.health === 1 && READY_STATES.includes(m.state));
  });
  if (!ready) {
    print(`mongo-init: warning: not every member of ${SET_NAME} is PRIMARY or SECONDARY yet; going on`);
  }

  const admin = primary.getSiblingDB('admin');
  const writeConcern = { w: 'majority', wtimeout: 60000 };
  if (admin.getUser(user)) {
    admin.updateUser(user, { pwd: password, roles: MONITORING_ROLES }, writeConcern);
    print(`mongo-init: updated monitoring user ${user} on ${primaryHost}`);
  } else {
    admin.createUser({ user, pwd: password, roles: MONITORING_ROLES }, writeConcern);
    print(`mongo-init: created monitoring user ${user} on ${primaryHost}`);
  }
}

try {
  main();
} catch (error) {
  // Never print a URI: it carries the root password. Errors from the server carry a code name instead.
  const reason = error instanceof InitError ? error.message : `${error.codeName || error.name}: ${error.message}`;
  print(`mongo-init: failed: ${reason}`);
  quit(1);
}
