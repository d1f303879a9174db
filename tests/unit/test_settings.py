from pathlib import Path

import pytest

from marketdata.entrypoints.settings import Settings, SettingsError, load_settings, settings_from


def test_defaults_are_the_seeds() -> None:
    s = settings_from({})
    assert (s.database_url, s.default_tf_min, s.max_limit) == (None, 5, 5000)
    assert (s.ws_default_step_seconds, s.ws_min_step_seconds, s.ws_max_step_seconds) == (
        15,
        1,
        60,
    )
    assert (s.db_connect_timeout, s.db_command_timeout) == (5, 30)


def test_environment_values_are_converted() -> None:
    s = settings_from(
        {"MAX_LIMIT": "10", "DB_COMMAND_TIMEOUT": "2.5", "CORS_ORIGINS": "http://a, http://b"}
    )
    assert s.max_limit == 10
    assert s.db_command_timeout == 2.5
    assert s.cors_origin_list == ["http://a", "http://b"]


def test_seed_style_driver_urls_are_accepted() -> None:
    s = settings_from({"DATABASE_URL": "postgresql+psycopg://u:p@db:5432/market"})
    assert s.database_url == "postgresql://u:p@db:5432/market"


def test_every_invalid_variable_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(
            {
                "MAX_LIMIT": "lots",
                "DEFAULT_TF_MIN": "0",
                "PORT": "70000",
                "LOG_LEVEL": "chatty",
                "DATABASE_URL": "mysql://root:hunter2@db/x",
            }
        )
    message = str(caught.value)
    for name in ("MAX_LIMIT", "DEFAULT_TF_MIN", "PORT", "LOG_LEVEL", "DATABASE_URL"):
        assert name in message
    assert len(caught.value.problems) == 5
    assert "hunter2" not in message


def test_step_bounds_must_be_consistent() -> None:
    with pytest.raises(SettingsError, match="WS_DEFAULT_STEP_SECONDS"):
        settings_from({"WS_MIN_STEP_SECONDS": "20"})
    with pytest.raises(SettingsError, match="WS_MIN_STEP_SECONDS"):
        settings_from({"WS_MIN_STEP_SECONDS": "70"})


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MAX_LIMIT=42\nDEFAULT_TF_MIN=15\n")
    s = load_settings({"DEFAULT_TF_MIN": "60"}, env_file)
    assert (s.max_limit, s.default_tf_min) == (42, 60)


def test_missing_dotenv_is_fine(tmp_path: Path) -> None:
    assert load_settings({}, tmp_path / "absent.env") == Settings()


def test_log_level_is_case_insensitive() -> None:
    assert settings_from({"LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_repr_hides_the_database_url() -> None:
    s = settings_from({"DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(s)
    assert "max_limit=5000" in repr(s)


def test_replica_urls_are_read_as_a_list() -> None:
    s = settings_from({"DATABASE_URL": "postgresql://u:p@db/x"})
    assert (s.replica_url_list, s.replica_max_lag_seconds, s.replica_wait_ms) == ([], 5, 0)
    s = settings_from(
        {
            "DATABASE_URL": "postgresql://u:p@db/x",
            "DATABASE_REPLICA_URLS": " postgresql+psycopg://u:p@r1/x , postgres://u:p@r2:5433/x,",
            "REPLICA_MAX_LAG_SECONDS": "0.5",
            "REPLICA_WAIT_MS": "25",
        }
    )
    assert s.replica_url_list == ["postgresql://u:p@r1/x", "postgres://u:p@r2:5433/x"]
    assert (s.replica_max_lag_seconds, s.replica_wait_ms) == (0.5, 25)


def test_replica_settings_are_checked_without_echoing_a_url() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(
            {
                "DATABASE_URL": "postgresql://u:p@db/x",
                "DATABASE_REPLICA_URLS": "postgresql://u:p@r1/x,mysql://root:hunter2@r2/x",
                "REPLICA_MAX_LAG_SECONDS": "0",
                "REPLICA_WAIT_MS": "-1",
            }
        )
    message = str(caught.value)
    assert "DATABASE_REPLICA_URLS: must be comma-separated postgresql:// URLs (item 2" in message
    assert "REPLICA_MAX_LAG_SECONDS" in message
    assert "REPLICA_WAIT_MS" in message
    assert "hunter2" not in message
    with pytest.raises(SettingsError, match="DATABASE_REPLICA_URLS: needs DATABASE_URL"):
        settings_from({"DATABASE_REPLICA_URLS": "postgresql://u:p@r1/x"})


def test_repr_hides_the_replica_urls() -> None:
    s = settings_from(
        {
            "DATABASE_URL": "postgresql://u:p@db/x",
            "DATABASE_REPLICA_URLS": "postgresql://u:hunter2@r/x",
        }
    )
    assert "hunter2" not in repr(s)
    assert "database_replica_urls='***'" in repr(s)
