"""Settings: flags, environment and config file, every problem reported once, no password anywhere."""

import os
import re
import stat
from urllib.parse import quote, quote_plus

import pytest
from view_factory import healthy_set, make_store

from replicationlag.config import ConfigError, load_settings
from replicationlag.credentials import Secrets, connectable, redact_uri
from replicationlag.liveness import liveness_document
from replicationlag.model import FRESHNESS_LIMIT_S

URI = "mongodb://monitor:s3cr%40t-pw@db0:27017,db1:27017/?replicaSet=rs0"


def test_flags_give_the_documented_defaults():
    settings = load_settings(["--mongodb.uri", URI], env={})
    assert settings.infra_label == "clusterKeeper"
    assert (settings.listen_host, settings.listen_port) == ("", 9218)  # every interface, IPv4 and IPv6
    assert settings.interval_s == 60
    assert settings.timeout_s == 10
    assert (settings.log_level, settings.log_format) == ("info", "text")


def test_every_flag_can_come_from_the_environment():
    env = {
        "MONGODB_URI": URI,
        "INFRA_LABEL": "other",
        "WEB_LISTEN_ADDRESS": "127.0.0.1:0",
        "COLLECT_INTERVAL": "5",
        "COLLECT_TIMEOUT": "2",
        "LOG_LEVEL": "warn",
        "LOG_FORMAT": "json",
    }
    settings = load_settings([], env=env)
    assert settings.uri == URI
    assert settings.infra_label == "other"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 0)
    assert (settings.interval_s, settings.timeout_s) == (5, 2)
    assert (settings.log_level, settings.log_format) == ("warning", "json")


def test_a_flag_wins_over_the_environment():
    settings = load_settings(["--collect.interval", "7"], env={"MONGODB_URI": URI, "COLLECT_INTERVAL": "9"})
    assert settings.interval_s == 7


def test_the_default_timeout_stays_well_under_a_short_interval():
    assert load_settings(["--mongodb.uri", URI, "--collect.interval", "1"], env={}).timeout_s == 0.5


def test_the_config_file_gives_the_uri_of_the_infra_label(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_text(f'[infra.clusterKeeper]\nuri = "{URI}"\n\n[infra.reporting]\nuri = "mongodb://r:27017"\n')
    path.chmod(0o600)
    assert load_settings(["--config.file", str(path)], env={}).uri == URI
    reporting = load_settings(["--config.file", str(path), "--infra.label", "reporting"], env={})
    assert reporting.uri == "mongodb://r:27017"
    assert reporting.warnings == ()


def test_an_unknown_label_names_the_labels_the_file_has(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_text('[infra.reporting]\nuri = "mongodb://r:27017"\n')
    with pytest.raises(ConfigError, match=r"unknown infra label 'clusterKeeper' \(labels in the file: reporting\)"):
        load_settings(["--config.file", str(path)], env={})


def test_a_config_file_with_a_password_readable_by_others_warns_without_the_password(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_text(f'[infra.clusterKeeper]\nuri = "{URI}"\n')
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IROTH)
    settings = load_settings(["--config.file", str(path)], env={})
    assert len(settings.warnings) == 1
    assert "readable by others" in settings.warnings[0]
    assert "s3cr" not in settings.warnings[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no MongoDB URI for infra label 'clusterKeeper'"),
        (["--mongodb.uri", "http://db0"], "must start with mongodb://"),
        (["--mongodb.uri", "mongodb://u:hunter2@db0:99999"], "bad host 'db0': its port must be a number"),
        (["--mongodb.uri", "mongodb://db0,,db1"], "an empty host in the host list"),
        (["--mongodb.uri", URI, "--collect.interval", "0"], "--collect.interval '0': must be a positive"),
        (["--mongodb.uri", URI, "--collect.interval", "-5"], "must be a positive"),
        (["--mongodb.uri", URI, "--collect.interval", "soon"], "not a number of seconds"),
        (["--mongodb.uri", URI, "--web.listen-address", "9218"], "use host:port"),
        (["--mongodb.uri", URI, "--log.format", "xml"], "use text or json"),
        (["--mongodb.uri", URI, "--log.level", "loud"], "use one of debug"),
        (["--mongodb.uri", URI, "--config.file", "/nonexistent/x.toml"], "no such file"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_reason(argv, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(argv, env={})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "s3cr" not in str(caught.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as caught:
        load_settings(["--collect.interval", "0", "--log.format", "xml"], env={})
    assert len(str(caught.value).splitlines()) == 3


def test_a_toml_syntax_error_is_reported_without_the_file_content(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_text('[infra.clusterKeeper\nuri = "mongodb://u:hunter2@db0"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(["--config.file", str(path)], env={})
    assert "not valid TOML" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    # Issue 17 item 10: not followed by a sentence that only repeats it.
    assert "no MongoDB URI" not in str(caught.value)


def test_redaction_hides_the_password_and_keeps_the_rest():
    assert redact_uri(URI) == "mongodb://monitor:***@db0:27017,db1:27017/?replicaSet=rs0"
    assert redact_uri("mongodb://db0:27017/?replicaSet=rs0") == "mongodb://db0:27017/?replicaSet=rs0"
    assert redact_uri("mongodb://u@db0/?authMechanism=MONGODB-X509") == "mongodb://u@db0/?authMechanism=MONGODB-X509"


def test_redaction_removes_every_spelling_of_a_long_password_wherever_it_appears():
    password = "s3cr@t-pw/with:a-long/tail"
    secrets = Secrets.of(uris=[f"mongodb://monitor:{quote(password, safe='')}@db0/"])
    text = f"failed for {password}, {quote(password, safe='')} and {quote_plus(password)} again"
    assert secrets.redact(text) == "failed for ***, *** and *** again"


def test_the_demo_polls_often_enough_to_show_its_lag_cycle():
    assert load_settings(["--demo"], env={}).interval_s == 5
    assert load_settings(["--demo", "--collect.interval", "30"], env={}).interval_s == 30


@pytest.mark.parametrize(("value", "seconds"), [("60", 60), ("0.5", 0.5), ("90s", 90), ("1m30s", 90), ("2m", 120)])
def test_intervals_read_plain_seconds_or_go_durations(value, seconds):
    assert load_settings(["--mongodb.uri", URI, "--collect.interval", value], env={}).interval_s == seconds


def test_a_deadline_longer_than_the_interval_is_allowed_with_a_warning():
    settings = load_settings(["--mongodb.uri", URI, "--collect.interval", "5", "--collect.timeout", "5"], env={})
    assert settings.timeout_s == 5
    assert any("not less than --collect.interval" in warning for warning in settings.warnings)


# -- issue 17 item 1: an interval whose data would go stale between two healthy polls ---------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--collect.interval", "200"], "--collect.interval '200'"),
        (["--collect.interval", "3m"], "--collect.interval '3m'"),
        (["--collect.interval", "166"], "--collect.interval '166'"),  # + the default 10 s deadline: 176 s
        (["--collect.timeout", "288h"], "--collect.timeout '288h'"),
        (["--collect.interval", "100", "--collect.timeout", "90"], "--collect.interval '100' with --collect.timeout"),
    ],
)
def test_a_poll_cycle_that_cannot_keep_the_data_fresh_is_refused_naming_the_setting(flags, named):
    with pytest.raises(ConfigError) as caught:
        load_settings(["--mongodb.uri", URI, *flags], env={})
    [line] = str(caught.value).splitlines()
    assert line.startswith(named)
    assert f"{FRESHNESS_LIMIT_S} s" in line


def test_the_longest_accepted_interval_keeps_a_healthy_set_fresh_until_its_next_poll_ends():
    settings = load_settings(["--mongodb.uri", URI, "--collect.interval", "2m45s"], env={})
    assert (settings.interval_s, settings.timeout_s) == (165, 10)
    store, clock = make_store(healthy_set(0), interval_s=settings.interval_s)
    # The next poll starts one interval after this one ended and may use its whole deadline before publishing.
    clock.advance(settings.interval_s + settings.timeout_s)
    status, answer = liveness_document(store.view())
    assert (status, answer["cluster_status"]) == (200, "GREEN")


# -- issue 17 items 3 and 4: every bad value is one line naming the setting, never a traceback or the URI -------


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("collect.interval", "1e308", "--collect.interval '1e308'"),
        ("collect.interval", "1e400", "--collect.interval '1e400': must be a positive"),
        ("collect.interval", "nan", "--collect.interval 'nan': must be a positive"),
        ("collect.interval", "100h", "--collect.interval '100h'"),
        ("collect.interval", "0.0003", "--collect.interval '0.0003': must be at least 0.2 s"),
        ("collect.timeout", "0.0003", "--collect.timeout '0.0003': must be at least 0.1 s"),
        ("collect.timeout", "1e308", "--collect.timeout '1e308'"),
    ],
)
def test_out_of_range_durations_are_blamed_on_their_setting(flag, value, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(["--mongodb.uri", URI, f"--{flag}", value], env={})
    [line] = str(caught.value).splitlines()
    assert line.startswith(message)
    assert "URI" not in line


def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_file_and_the_byte(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_bytes(b'# cl\xe9\n[infra.clusterKeeper]\nuri = "mongodb://127.0.0.1:1/"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(["--config.file", str(path)], env={})
    [line] = str(caught.value).splitlines()
    assert line.startswith(f"--config.file {path}: not UTF-8")
    assert "0xe9 at line 1" in line


def test_a_utf8_config_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_bytes(f'\ufeff[infra.clusterKeeper]\nuri = "{URI}"\n'.encode())
    path.chmod(0o600)
    assert load_settings(["--config.file", str(path)], env={}).uri == URI


def test_a_config_file_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(["--config.file", str(tmp_path)], env={})


def test_a_huge_config_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_settings(["--config.file", str(path)], env={})


def test_a_deeply_nested_config_file_is_one_line(tmp_path):
    path = tmp_path / "infra.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(["--config.file", str(path)], env={})
    [line] = str(caught.value).splitlines()
    assert line.startswith(f"--config.file {path}: not valid TOML")


# -- issue 17 item 2: a password in a malformed URI is never printed, whatever characters it holds ------------------


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://user:Xy7/Qz9@127.0.0.1:1/",
        "mongodb://user:Xy7?Qz9@127.0.0.1:1/",
        "mongodb://user:Xy7/Qz9@127.0.0.1:1",  # the driver would read host 'user:Xy7' and database 'Qz9@...'
        "mongodb://user:Xy7#Qz9@127.0.0.1:1/?x=Xy7?Qz9@h",
        "mongodb://user:Xy7@Qz9@127.0.0.1:1/",
        "mongodb://user:Xy7:Qz9@127.0.0.1:1/",
        "mongodb://user:Xy7%Qz9@127.0.0.1:1/",
        "mongodb://user:Xy7Qz9/",  # no '@' at all: 'Xy7Qz9' may still be the password
        "mongodb://db0,,user:Xy7Qz9/",
        "mongo://user:Xy7Qz9@db0/",
        "user:Xy7/Qz9@db0",
        "mongodb:/user:Xy7/Qz9@db0",
    ],
)
def test_a_malformed_uri_is_refused_without_any_piece_of_its_password(uri):
    with pytest.raises(ConfigError) as caught:
        load_settings(["--mongodb.uri", uri], env={})
    [line] = str(caught.value).splitlines()
    assert "malformed MongoDB URI" in line
    assert "Xy7" not in line
    assert "Qz9" not in line


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://user:pa/ss@db0:27017/?replicaSet=rs0", "mongodb://user:***@db0:27017/?replicaSet=rs0"),
        ("mongodb://user:pa?ss@db0/", "mongodb://user:***@db0/"),
        ("mongodb://user:a@b@db0/", "mongodb://user:***@db0/"),
        ("user:secret@db0", "user:***@db0"),
        ("mongodb://[::1]:27017/?password=x&authMechanismProperties=AWS_SESSION_TOKEN:t", None),
    ],
)
def test_redaction_treats_everything_up_to_the_last_at_sign_as_the_userinfo(uri, shown):
    expected = shown or "mongodb://[::1]:27017/?password=***&authMechanismProperties=***"
    assert redact_uri(uri) == expected


# -- issue 15: redaction where secrets occur, not by substring over whole lines -------------------------------------

READABLE = (
    "serving http://127.0.0.1:9218/ for infra clusterKeeper, polling every 60 s; replica set rs0 is GREEN: "
    "the lag is 1239ms, level info, source main, 27017 the end"
)


@pytest.mark.parametrize(
    "password",
    ["e", "1", "lag", "127", "the", "27017", "x" * 15, "correct-horse-battery-staple-is-40-chars"],
)
def test_a_password_of_any_length_leaves_ordinary_text_readable_and_is_hidden_in_uris(password):
    uri = f"mongodb://monitor:{quote(password, safe='')}@127.0.0.1:27017/?replicaSet=rs0"
    settings = load_settings(["--mongodb.uri", uri], env={})
    assert settings.redact(READABLE) == READABLE
    assert settings.redacted_uri == "mongodb://monitor:***@127.0.0.1:27017/?replicaSet=rs0"
    quoted = f"the driver said: cannot use '{uri}' (mongodb+srv://monitor:{password}@x/ too)"
    assert settings.redact(quoted) == (
        "the driver said: cannot use 'mongodb://monitor:***@127.0.0.1:27017/?replicaSet=rs0' "
        "(mongodb+srv://monitor:***@x/ too)"
    )


def test_a_long_password_quoted_bare_by_a_driver_is_hidden_too():
    password = "correct-horse-battery-staple-is-40-chars"
    assert len(password) == 40
    settings = load_settings(["--mongodb.uri", f"mongodb://monitor:{password}@db0/"], env={})
    assert settings.redact(f"SASL said {password}.") == "SASL said ***."


def test_secrets_from_several_sources_combine():
    """How shard and config-server credentials from the config file will join the URI's."""
    first = Secrets.of(uris=["mongodb://a:first-password-long-enough@db0/"])
    combined = first | Secrets.of(passwords=["second-password-long-enough"])
    assert combined.redact("first-password-long-enough second-password-long-enough") == "*** ***"
    assert "password" not in repr(combined)


# -- issue 17 item 6: --demo never polls a real cluster ------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "source"),
    [
        ([], {"MONGODB_URI": URI}, "MONGODB_URI"),
        (["--mongodb.uri", URI], {}, "--mongodb.uri"),
        (["--config.file", "/nonexistent/replicationlag.toml"], {}, "--config.file"),
        ([], {"CONFIG_FILE": "/nonexistent/replicationlag.toml"}, "CONFIG_FILE"),
    ],
)
def test_the_demo_ignores_any_uri_it_is_given_and_says_so(flags, env, source):
    settings = load_settings(["--demo", *flags], env=env)
    assert (settings.demo, settings.uri, settings.interval_s) == (True, "", 5)
    [warning] = settings.warnings
    assert warning.startswith(f"--demo: {source} is ignored")
    assert "s3cr" not in warning


# -- issue 26: what users of other MongoDB exporters look for -------------------------------------------------------

BARE = "mongodb://db0:27017,db1:27017/?replicaSet=rs0"
MONITOR = "mongodb://monitor@db0/"


def test_percona_style_user_and_password_are_put_into_the_uri_percent_encoded_and_redacted():
    settings = load_settings(
        ["--mongodb.uri", BARE, "--mongodb.user", "mon:itor"], env={"MONGODB_PASSWORD": "s3cr@t/pw%"}
    )
    assert settings.uri == "mongodb://mon%3Aitor:s3cr%40t%2Fpw%25@db0:27017,db1:27017/?replicaSet=rs0"
    assert settings.redacted_uri == "mongodb://mon%3Aitor:***@db0:27017,db1:27017/?replicaSet=rs0"
    assert "s3cr" not in settings.redact(f"failed: {settings.uri}")


def test_the_user_may_come_from_the_uri_and_only_the_password_from_the_environment():
    settings = load_settings([], env={"MONGODB_URI": "mongodb://monitor@db0/?replicaSet=rs0", "MONGODB_PASSWORD": "pw"})
    assert settings.uri == "mongodb://monitor:pw@db0/?replicaSet=rs0"


def test_the_user_may_come_from_the_environment():
    settings = load_settings(["--mongodb.uri", BARE], env={"MONGODB_USER": "monitor", "MONGODB_PASSWORD": "pw"})
    assert settings.uri.startswith("mongodb://monitor:pw@db0:27017,")


def test_the_password_file_loses_its_trailing_newline_only(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(" spaced pw \n")
    secret.chmod(0o600)
    settings = load_settings(["--mongodb.uri", MONITOR, "--mongodb.password-file", str(secret)], env={})
    assert settings.uri == "mongodb://monitor:%20spaced%20pw%20@db0/"
    assert settings.warnings == ()


def test_a_password_file_others_can_read_warns_without_the_password(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw")
    secret.chmod(0o644)
    settings = load_settings(["--mongodb.uri", MONITOR, "--mongodb.password-file", str(secret)], env={})
    [warning] = settings.warnings
    assert "readable by others" in warning and "s3cret" not in warning


@pytest.mark.parametrize(
    ("flags", "env", "file_text", "message"),
    [
        (["--mongodb.uri", URI], {"MONGODB_PASSWORD": "other-pw"}, None, "the MongoDB URI already carries a password"),
        (["--mongodb.uri", URI, "--mongodb.password-file", "{file}"], {}, "other-pw", "already carries a password"),
        (["--mongodb.uri", URI, "--mongodb.user", "other"], {}, None, "the MongoDB URI already names a user"),
        (["--mongodb.uri", BARE], {"MONGODB_PASSWORD": "other-pw"}, None, "a password is given"),
        (["--mongodb.uri", BARE, "--mongodb.password-file", "{file}"], {"MONGODB_USER": "u"}, "", "{file}: empty"),
        (["--mongodb.uri", BARE, "--mongodb.password-file", "{file}"], {"MONGODB_USER": "u"}, "\n", "{file}: empty"),
        (["--mongodb.uri", BARE, "--mongodb.password-file", "{tmp}/missing"], {}, None, "missing: no such file"),
        (["--mongodb.uri", BARE, "--mongodb.password-file", "{tmp}"], {}, None, "not a regular file"),
        (
            ["--mongodb.uri", BARE, "--mongodb.user", "u", "--mongodb.password-file", "{file}"],
            {"MONGODB_PASSWORD": "other-pw"},
            "file-pw",
            "are both set",
        ),
    ],
)
def test_credentials_given_twice_to_nobody_or_from_a_bad_file_are_refused(tmp_path, flags, env, file_text, message):
    secret = tmp_path / "password"
    if file_text is not None:
        secret.write_text(file_text)
    fields = {"file": secret, "tmp": tmp_path}
    with pytest.raises(ConfigError) as refused:
        load_settings([flag.format(**fields) for flag in flags], env=env)
    assert message.format(**fields) in str(refused.value)
    for password in ("s3cr", "other-pw", "file-pw"):
        assert password not in str(refused.value)


def test_an_unreadable_password_file_is_refused_saying_why(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=r"a-file/password: cannot read it \(Not a directory\)"):
        load_settings(["--mongodb.uri", BARE, "--mongodb.password-file", str(blocked / "password")], env={})


def test_the_demo_ignores_credentials_it_is_given_and_says_so():
    settings = load_settings(["--demo", "--mongodb.user", "u"], env={"MONGODB_PASSWORD": "pw"})
    assert settings.uri == ""
    ignored = [w.split(" is ignored")[0] for w in settings.warnings]
    assert ignored == ["--demo: --mongodb.user", "--demo: MONGODB_PASSWORD"]


def test_the_demo_listens_on_loopback_unless_told_otherwise():
    assert (load_settings(["--demo"], env={}).listen_host, load_settings(["--demo"], env={}).listen_port) == (
        "127.0.0.1",
        9218,
    )
    assert load_settings(["--demo", "--web.listen-address", ":9300"], env={}).listen_host == ""
    assert load_settings(["--demo"], env={"WEB_LISTEN_ADDRESS": "0.0.0.0:9218"}).listen_host == "0.0.0.0"


def test_the_telemetry_path_defaults_to_metrics_and_may_be_moved():
    assert load_settings(["--mongodb.uri", URI], env={}).telemetry_path == "/metrics"
    settings = load_settings(["--mongodb.uri", URI, "--web.telemetry-path", "/prometheus/metrics"], env={})
    assert settings.telemetry_path == "/prometheus/metrics"
    assert load_settings([], env={"MONGODB_URI": URI, "WEB_TELEMETRY_PATH": "/m"}).telemetry_path == "/m"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("metrics", "must start with '/'"),
        ("/met rics", "URL path characters"),
        ("/metrics?x=1", "URL path characters"),
        ("/<name>", "URL path characters"),  # a bottle wildcard would swallow every path
        ("/liveness", "taken by another endpoint"),
        ("/", "taken by another endpoint"),
        ("/-/healthy", "taken by another endpoint"),
        ("/-/ready", "taken by another endpoint"),
        ("/mhp.zeroproblem.mongo.replcationlag", "taken by another endpoint"),
    ],
)
def test_a_telemetry_path_that_is_not_a_path_or_collides_with_a_route_is_refused(path, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(["--mongodb.uri", URI, "--web.telemetry-path", path], env={})


# --- The sets behind mongos routers: the credentials tables (issue 22 item 8) -----------------------------------
ROUTER_URI = "mongodb://monitor:r0uter@r1:27017,r2:27017/?authSource=admin"


def settings_from_file(tmp_path, tables: str, uri: str = ROUTER_URI):
    path = tmp_path / "infra.toml"
    path.write_text(f'[infra.clusterKeeper]\nuri = "{uri}"\n{tables}')
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return load_settings(["--config.file", str(path)], env={})


@pytest.mark.parametrize(
    "table",
    ["[infra.clusterKeeper.shards]", "[infra.clusterKeeper.shards.shard03]", "[infra.clusterKeeper.config_servers]"],
)
def test_an_empty_password_for_the_sets_behind_the_routers_is_refused_at_start_naming_the_setting(tmp_path, table):
    # It used to be accepted, and then every poll of those sets failed with "the MongoDB URI was rejected".
    with pytest.raises(ConfigError) as caught:
        settings_from_file(tmp_path, f'{table}\nusername = "monitor"\npassword = ""\n')
    assert str(caught.value) == f"{table}: password is empty: give the password of user 'monitor'"


def test_a_per_shard_table_is_said_at_start_to_be_checked_against_the_shard_map(tmp_path):
    settings = settings_from_file(
        tmp_path,
        '[infra.clusterKeeper.shards.shard3]\nusername = "monitor03"\npassword = "s3cret-03"\n'
        '[infra.clusterKeeper.shards.shard04]\nusername = "monitor04"\npassword = "s3cret-04"\n',
    )
    assert settings.warnings == (
        "[infra.clusterKeeper.shards.shard04], [infra.clusterKeeper.shards.shard3]: each table's name must be a "
        "shard id of the routers' shard map; checked when the map is read, and a table that names no shard is not "
        "used",
    )
    assert "s3cret" not in repr(settings.warnings)


def test_credentials_tables_with_a_uri_that_names_a_replica_set_are_said_to_be_unused(tmp_path):
    uri = "mongodb://monitor:pw@db0:27017/?replicaSet=rs0"
    settings = settings_from_file(
        tmp_path,
        '[infra.clusterKeeper.shards.shard01]\nusername = "m"\npassword = "p"\n'
        '[infra.clusterKeeper.config_servers]\nusername = "m"\npassword = "p"\n',
        uri=uri,
    )
    assert settings.warnings == (
        "[infra.clusterKeeper.shards.shard01], [infra.clusterKeeper.config_servers]: not used: the URI names one "
        "replica set (replicaSet=rs0), not mongos routers",
    )


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("db1.example.net:27017", True),
        ("10.0.0.7:27018", True),
        ("[::1]:27017", True),
        ("[fe80::1%eth0]:27017", True),
        ("db1", True),  # the driver's default port
        ("db1:65535", True),
        ("db1:65536", False),
        ("db1:0", False),
        ("db@1:27017", False),  # read as a user name: the driver's advice would be about escaping it
        ("db/1:27017", False),  # read as a database
        ("db?1:27017", False),  # read as options
        ("db:1:27017", False),
        ("db 1:27017", False),
        ("db1:abc", False),
        ("", False),
    ],
)
def test_a_member_or_shard_host_is_connectable_only_as_a_name_or_address_and_a_port(host, ok):
    assert connectable(host) is ok


@pytest.mark.parametrize(
    "url", ["https://lag.example.com/", "http://10.0.0.7:9218/", "https://[2001:db8::7]:9218/status", "http://lag"]
)
def test_the_external_url_of_the_status_page_comes_from_the_flag_or_the_environment(url):
    assert load_settings(["--mongodb.uri", URI, "--web.external-url", url], env={}).web_external_url == url
    assert load_settings([], env={"MONGODB_URI": URI, "WEB_EXTERNAL_URL": url}).web_external_url == url
    assert load_settings(["--mongodb.uri", URI], env={}).web_external_url == ""


@pytest.mark.parametrize(
    "url",
    [
        "lag.example.com",  # no scheme
        "ftp://lag.example.com/",
        "https://",  # no host
        "https://admin:hunter2@lag.example.com/",  # a password would be in every document
        "https://lag.example.com/\n- Primary fake:1 replication lag 0ms",
        "https://lag.example.com/a b",
        "https://lag.example.com/<x>",
        "https://lag.example.com:99999999/",
        "https://lag.example.com/" + "a" * 200,
    ],
)
def test_an_external_url_that_is_no_http_address_is_refused_with_what_to_use(url):
    with pytest.raises(ConfigError) as raised:
        load_settings(["--mongodb.uri", URI, "--web.external-url", url], env={})
    assert "--web.external-url" in str(raised.value)
    assert "use an http:// or https:// address" in str(raised.value)
    assert "hunter2" not in str(raised.value)
