"""Settings: flags, environment and config file, every problem reported once, no password anywhere."""

import os
import stat

import pytest

from config import ConfigError, load_settings, redact_uri, scrub, uri_secrets

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
        (["--mongodb.uri", "mongodb://u:hunter2@db0:99999"], "bad host 'db0:99999'"),
        (["--mongodb.uri", "mongodb://db0,,db1"], "bad host ''"),
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


def test_redaction_hides_the_password_and_keeps_the_rest():
    assert redact_uri(URI) == "mongodb://monitor:***@db0:27017,db1:27017/?replicaSet=rs0"
    assert redact_uri("mongodb://db0:27017/?replicaSet=rs0") == "mongodb://db0:27017/?replicaSet=rs0"
    assert redact_uri("mongodb://u@db0/?authMechanism=MONGODB-X509") == "mongodb://u@db0/?authMechanism=MONGODB-X509"


def test_scrubbing_removes_every_spelling_of_the_password():
    secrets = uri_secrets(URI)
    text = "failed for s3cr%40t-pw, s3cr@t-pw and s3cr%40t-pw again"
    assert scrub(text, secrets) == "failed for ***, *** and *** again"


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
