"""Config parsing: every error is one line naming the file, the key and the reason."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder import config
from recorder.exceptions import ConfigError
from recorder.protocol import MARKETS, Stream, split_codes
from recorder.schema import TABLES

EXAMPLE = Path(__file__).parent.parent / "config" / "recorder.example.toml"


def _doc(**sections: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"subscribe": {"trades": ["US:AAPL,TSLA", "HK:700"]}}
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return doc


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(doc, "rec.toml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("rec.toml: ")
    return message


def test_example_config_is_valid_and_documents_every_key() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.subscribe.all_codes()[:2] == ["US:AAPL", "US:TSLA"]
    text = EXAMPLE.read_text()
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    for section, cls in config._SECTIONS.items():
        for name in dataclasses.fields(cls):
            assert f"{name.name} =" in text or f"# {name.name} =" in text, f"{section}.{name.name}"
            assert f"`{name.name}`" in readme, f"{section}.{name.name} not in README"


def test_defaults() -> None:
    cfg = config.parse(_doc())
    assert cfg.upstream.heartbeat_interval == 20.0 and cfg.sink.kind == "sqlite"
    assert cfg.subscribe.codes(Stream.TRADES) == ["US:AAPL", "US:TSLA", "HK:700"]


def test_unknown_key_names_a_close_match() -> None:
    assert _error(_doc(upstream={"heartbeat_intervall": 5})) == (
        "rec.toml: upstream.heartbeat_intervall: unknown key (did you mean "
        "upstream.heartbeat_interval?)"
    )
    assert "did you mean subscribe" in _error({**_doc(), "subscrbe": {}})


@pytest.mark.parametrize(
    "entry, reason",
    [
        ("AAPL", "is not MARKET:SYMBOL"),
        ("XX:AAPL", "unknown market 'XX'"),
        ("US:AA PL", "malformed symbol"),
        ("US:AAPL,", "malformed symbol ''"),
    ],
)
def test_malformed_codes(entry: str, reason: str) -> None:
    message = _error(_doc(subscribe={"depth": [entry]}))
    assert "subscribe.depth[0]" in message and reason in message


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "HK:0700.HK",
            "'HK:0700.HK': malformed symbol '0700.HK': HK symbols are digits without leading "
            "zeros, such as 700 (did you mean 'HK:700'?)",
        ),
        (
            "hk:700",
            "'hk:700': unknown market 'hk': market names are capitals (did you mean 'HK:700'?)",
        ),
        (
            "SZ:1,2594",
            "'SZ:1,2594': malformed symbol '1': SZ symbols are six digits, such as 000001 "
            "(did you mean 'SZ:000001,002594'?)",
        ),
        ("SH:600519.SS", "(did you mean 'SH:600519'?)"),
        ("US:aapl,TSLA", "(did you mean 'US:AAPL,TSLA'?)"),
        ("CF:btc-usdt", "(did you mean 'CF:BTCUSDT'?)"),
        ("SZ:1234567", "'SZ:1234567': malformed symbol '1234567': SZ symbols are six digits"),
    ],
)
def test_codes_in_another_form_than_the_markets_suggest_the_close_one(
    entry: str, message: str
) -> None:
    problem = config.check_code_entry(entry)
    assert problem is not None and message in problem


@pytest.mark.parametrize(
    "entry", ["HK:700,9988", "SH:600519", "SZ:000001", "US:BRK.B", "CF:1000PEPEUSDT", "FX:EURUSD"]
)
def test_the_references_forms_pass(entry: str) -> None:
    assert config.check_code_entry(entry) is None


@given(st.sampled_from(sorted(MARKETS)), st.text(max_size=12))
def test_a_suggested_code_is_always_valid(market: str, symbol: str) -> None:
    problem = config.check_code_entry(f"{market}:{symbol}") or ""
    if "did you mean" in problem:
        suggestion = problem.rsplit("did you mean ", 1)[1].removesuffix("?)")
        assert config.check_code_entry(suggestion.strip("'\"")) is None


def test_bad_kline_types() -> None:
    message = _error(_doc(subscribe={"klines": ["CF:BTCUSDT"], "kline_types": [1, 7]}))
    assert "subscribe.kline_types: 7 is not a K-line type" in message
    assert "must be a list of integers" in _error(_doc(subscribe={"kline_types": ["1"]}))


def test_more_codes_than_the_plan_allows() -> None:
    codes = [f"US:S{chr(65 + i)}" for i in range(11)]
    assert "11 distinct codes, the plan allows 10" in _error(_doc(subscribe={"trades": codes}))
    cfg = config.parse(_doc(subscribe={"trades": codes}, upstream={"max_products": 20}))
    assert len(cfg.subscribe.all_codes()) == 11


def test_wrong_types_and_choices() -> None:
    assert "sink.kind: must be one of sqlite, questdb, null" in _error(_doc(sink={"kind": "pg"}))
    assert "sink.batch_rows: must be a positive integer" in _error(_doc(sink={"batch_rows": 0}))
    assert "upstream.ws_url: must start with ws://" in _error(_doc(upstream={"ws_url": "http://x"}))
    assert "heartbeat_interval" in _error(_doc(upstream={"heartbeat_interval": 45}))
    assert "request_interval" in _error(_doc(upstream={"request_interval": 0.5}))
    assert "no codes" in _error({"subscribe": {}})


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[upstream\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match=r"missing.toml: cannot read"):
        config.load(tmp_path / "missing.toml")


def test_key_from_env_and_file_never_echoed(tmp_path: Path) -> None:
    cfg = config.parse(_doc(upstream={"key_env": "QOS_K"}), "rec.toml")
    with pytest.raises(ConfigError, match="environment variable QOS_K is not set"):
        config.read_key(cfg, {})
    secret = config.read_key(cfg, {"QOS_K": "s3cr3t-value"})
    assert secret.reveal() == "s3cr3t-value"
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret)

    key_file = tmp_path / "key"
    cfg = config.parse(_doc(upstream={"key_env": "", "key_file": str(key_file)}), "rec.toml")
    with pytest.raises(ConfigError, match=r"upstream\.key_file: cannot read"):
        config.read_key(cfg, {})
    key_file.write_text("file-secret\n")
    os.chmod(key_file, 0o644)
    assert config.read_key(cfg, {}).reveal() == "file-secret"
    warning = config.key_file_warning(cfg, {})
    assert warning is not None and "readable by other users" in warning
    os.chmod(key_file, 0o600)
    assert config.key_file_warning(cfg, {}) is None


def test_key_file_from_systemd_credentials(tmp_path: Path) -> None:
    (tmp_path / "qos-key").write_text("cred-secret")
    cfg = config.parse(_doc(upstream={"key_env": "", "key_file": "qos-key"}))
    assert config.read_key(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path)}).reveal() == "cred-secret"


def test_exactly_one_key_source() -> None:
    message = _error(_doc(upstream={"key_env": "QOS_K", "key_file": "/k"}))
    assert "set exactly one of key_env and key_file" in message
    assert "set exactly one" in _error(_doc(upstream={"key_env": ""}))


def test_key_file_alone_wins_over_the_default_key_env(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("file-secret\n")
    cfg = config.parse(_doc(upstream={"key_file": str(tmp_path / "key")}), "rec.toml")
    assert cfg.upstream.key_env is None
    assert config.read_key(cfg, {"QOS_API_KEY": "env-secret"}).reveal() == "file-secret"


# --- hypothesis -------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.floats(-1, 100),
    st.text(max_size=12),
    st.lists(st.text(max_size=10), max_size=3),
)
section_names = st.sampled_from([*config._SECTIONS, "bogus"])
keys = st.one_of(
    st.sampled_from(
        sorted({f.name for c in config._SECTIONS.values() for f in dataclasses.fields(c)})
    ),
    st.text(max_size=8),
)
documents = st.dictionaries(section_names, st.dictionaries(keys, scalars, max_size=4), max_size=4)


@given(documents)
def test_any_document_parses_or_raises_config_error_in_one_line(doc: dict[str, Any]) -> None:
    try:
        cfg = config.parse(doc, "h.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("h.toml: ")
    else:
        assert cfg.subscribe.all_codes()


FORMS = {"US": r"[A-Z]{1,5}", "HK": r"[1-9][0-9]{0,4}", "CF": r"[A-Z][A-Z0-9]{0,5}"}
entries = st.sampled_from(sorted(FORMS)).flatmap(
    lambda m: st.lists(st.from_regex(FORMS[m], fullmatch=True), min_size=1, max_size=3).map(
        lambda syms: f"{m}:{','.join(syms)}"
    )
)


@given(st.lists(entries, min_size=1, max_size=3), st.integers(1, 30))
def test_valid_subscriptions_parse_to_the_same_codes(trades: list[str], hb: int) -> None:
    text = f"[subscribe]\ntrades = {trades!r}\n[upstream]\nheartbeat_interval = {hb}\n"
    doc = tomllib.loads(text.replace("'", '"'))
    expected = split_codes(trades)
    if len(expected) > 10:
        with pytest.raises(ConfigError, match="the plan allows 10"):
            config.parse(doc)
        return
    cfg = config.parse(doc)
    assert cfg.subscribe.codes(Stream.TRADES) == expected
    assert cfg.upstream.heartbeat_interval == hb


def _paths(tmp: Path, **sections: dict[str, Any]) -> config.Config:
    doc = _doc(
        sink={"sqlite_path": str(tmp / "ticks.sqlite")},
        spool={"dir": str(tmp / "spool")},
        log={"dead_letter": str(tmp / "dead.ndjson")},
    )
    for name, values in sections.items():
        doc[name].update(values)
    return config.parse(doc, "rec.toml")


def test_paths_that_exist_or_can_be_made_pass_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    assert config.check_paths(_paths(tmp_path)) == []
    cfg = _paths(tmp_path, sink={"sqlite_path": str(tmp_path / "new" / "dir" / "t.sqlite")})
    (note,) = config.check_paths(cfg)
    assert note == (
        f"sink.sqlite_path: {tmp_path}/new/dir/t.sqlite will be created (under {tmp_path})"
    )


def test_a_path_that_cannot_be_written_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cfg = _paths(tmp_path, spool={"dir": str(tmp_path / "file" / "spool")})
    with pytest.raises(ConfigError) as info:
        config.check_paths(cfg)
    assert str(info.value) == (
        f"rec.toml: spool.dir: {tmp_path}/file/spool: cannot be made: "
        f"{tmp_path}/file is a file, not a folder"
    )
    cfg = _paths(tmp_path, spool={"dir": str(tmp_path / "file")})
    with pytest.raises(ConfigError, match=r"spool\.dir: .*: is not a folder"):
        config.check_paths(cfg)
    cfg = _paths(tmp_path, sink={"sqlite_path": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"sink\.sqlite_path: .*: is not a file"):
        config.check_paths(cfg)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cfg = _paths(tmp_path, log={"dead_letter": str(locked / "dead.ndjson")})
        with pytest.raises(ConfigError, match=r"log\.dead_letter: .*locked is not writable"):
            config.check_paths(cfg)


def test_the_retention_keys_are_the_tables_and_days_names_them() -> None:
    # config sits below the schema, so its keys are held to the table names here
    keys = [f.name for f in dataclasses.fields(config.RetentionConfig) if f.name != "archive"]
    assert keys == [t.name for t in TABLES]
    limits = {name: float(i) for i, name in enumerate(keys)}
    assert config.RetentionConfig(**limits, archive="x").days() == limits
    assert config.RetentionConfig().days() == {}
