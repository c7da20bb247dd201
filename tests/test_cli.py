"""The command line: settle, explain, policy check/show, demo, and its exit statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from yibao.cli import app

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "src" / "yibao" / "data" / "policies"
EXAMPLE = ROOT / "examples" / "dandong-outpatient.json"

runner = CliRunner()


def invoke(*args: str, stdin: str | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def error_of(result: Any) -> dict[str, Any]:
    """The JSON error object the CLI writes on stderr."""
    payload: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])
    return payload


def example(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text("utf-8"))
    data.update(changes)
    return data


def write(tmp_path: Path, data: Any, name: str = "request.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), "utf-8")
    return path


# -- settle --------------------------------------------------------------------------


def test_settle_prints_the_result_as_json() -> None:
    result = invoke("settle", EXAMPLE)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    info = out["setlinfo"]
    assert (info["medfee_sumamt"], info["act_pay_dedc"], info["hifp_pay"]) == ("1050.00", "300.00", "455.00")
    assert (info["psn_part_amt"], info["acct_pay"], info["psn_cash_pay"]) == ("595.00", "595.00", "0.00")
    assert info["pool_prop_selfpay"] == "0.6500"
    assert out["setldetail"][0]["fund_pay_type"] == "310100"
    assert out["trace"] and out["policy"]["region"] == "210600"
    assert result.stderr == ""


def test_settle_without_trace() -> None:
    result = invoke("settle", EXAMPLE, "--no-trace")
    assert result.exit_code == 0
    assert "trace" not in json.loads(result.stdout)


def test_settle_reads_stdin() -> None:
    result = invoke("settle", "-", stdin=EXAMPLE.read_text("utf-8"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["setlinfo"]["hifp_pay"] == "455.00"


def test_settle_with_an_explicit_policy_dir_and_catalogue(tmp_path: Path) -> None:
    catalog = ROOT / "src" / "yibao" / "data" / "catalog" / "demo.csv"
    result = invoke("settle", EXAMPLE, "--policy-dir", PRESETS, "--catalog", catalog, "--no-trace")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["setlinfo"]["hifp_pay"] == "455.00"


# -- explain -------------------------------------------------------------------------


def test_explain_prints_chinese_text() -> None:
    result = invoke("explain", EXAMPLE)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "起付线" in text and "300.00" in text and "65%" in text
    assert "丹东市" in text and "455.00" in text
    assert "[310100]" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_explain_in_english() -> None:
    result = invoke("explain", EXAMPLE, "--lang", "en")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "deductible 300.00" in text and "paid at 65%" in text and "Cash payment" in text
    assert "起付线" not in text


def test_explain_refuses_an_unknown_language() -> None:
    result = invoke("explain", EXAMPLE, "--lang", "fr")
    assert result.exit_code == 2
    assert error_of(result)["field"] == "--lang"


# -- errors of settle / explain --------------------------------------------------------


@pytest.mark.parametrize("command", ["settle", "explain"])
def test_malformed_json_exits_2_with_line_and_column(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, '{\n  "psn_no": "1",\n  "gend": \n}\n')
    result = invoke(command, path)
    assert result.exit_code == 2
    err = error_of(result)
    assert err["error"] == "REQUEST_INVALID"
    assert "malformed JSON at line 4, column 1" in err["message"]
    assert result.stdout == ""


def test_a_request_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_bytes('{"psn_no": "张三"}'.encode("gb18030"))
    result = invoke("settle", path)
    assert result.exit_code == 2 and "UTF-8" in error_of(result)["message"]


def test_a_missing_request_file_exits_2(tmp_path: Path) -> None:
    result = invoke("settle", tmp_path / "nope.json")
    assert result.exit_code == 2
    assert "cannot read" in error_of(result)["message"]


def test_an_invalid_request_exits_2_naming_the_field(tmp_path: Path) -> None:
    data = example()
    data["feedetail"][0]["det_item_fee_sumamt"] = "999.99"
    result = invoke("settle", write(tmp_path, data))
    assert result.exit_code == 2
    err = error_of(result)
    assert err["field"] == "feedetail[0].det_item_fee_sumamt" and "不等于 单价 × 数量 (pric × cnt" in err["message"]


def test_an_unknown_region_exits_2_with_its_code(tmp_path: Path) -> None:
    result = invoke("settle", write(tmp_path, example(insuplc_admdvs="990000")))
    assert result.exit_code == 2
    err = error_of(result)
    assert (err["error"], err["field"]) == ("UNKNOWN_REGION", "insuplc_admdvs")


def test_a_refused_settlement_exits_1_with_the_reason_code(tmp_path: Path) -> None:
    # Insured in 丹东, treated in 天津, no off-site filing: the national gate refuses.
    result = invoke("settle", write(tmp_path, example(mdtrtarea_admvs="120000")))
    assert result.exit_code == 1
    err = error_of(result)
    assert err["error"] == "NOT_ENTITLED"
    assert [r["code"] for r in err["reasons"]] == ["OFFSITE_UNFILED"]
    assert "异地就医未备案" in err["reasons"][0]["message"]
    assert result.stdout == ""


def test_the_same_trip_with_a_filing_settles(tmp_path: Path) -> None:
    result = invoke("settle", write(tmp_path, example(mdtrtarea_admvs="120000", filings={"offsite": "referral"})))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["setlinfo"]["mdtrtarea_admvs"] == "120000"


# -- policy check ----------------------------------------------------------------------


def test_policy_check_on_the_bundled_presets() -> None:
    result = invoke("policy", "check", PRESETS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    regions = sorted(p.name.split("-")[0] for p in PRESETS.glob("*.yaml"))
    assert [line.split()[1] for line in lines] == regions
    assert all(line.startswith("ok  ") for line in lines)
    assert any("440100" in line and "2015-01-01, 2021-01-01" in line for line in lines)


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(PRESETS, target)
    text = (target / file).read_text("utf-8")
    assert text.count(old) == 1, old
    (target / file).write_text(text.replace(old, new), "utf-8")
    return target


@pytest.mark.parametrize(
    ("file", "old", "new", "key", "reason"),
    [
        (
            "120000-tianjin.yaml", '- {level: level_3, value: "0.80"}', '- {level: level_3, value: "1.80"}',
            "policy.schemes.310.benefits.inpatient.fund.ratio[0]", "比例须在 [0, 1] 之内",
        ),
        (
            "210600-dandong.yaml", "amount_yuan: {value: 300, reference: dandong-example}",
            "amount_yuan: {value: 300, reference: no-such-ref}",
            "policy.schemes.310.benefits.outpatient_pooling.fund.deductible.amount_yuan.reference", "unknown reference",
        ),
        ("532900-dali.yaml", 'parent: "530000"', 'parent: "539999"', "parent", "no policy file defines region 539999"),
    ],
    ids=["ratio", "reference", "parent"],
)  # fmt: skip
def test_policy_check_on_a_broken_dir_exits_2_naming_file_and_key(
    tmp_path: Path, file: str, old: str, new: str, key: str, reason: str
) -> None:
    result = invoke("policy", "check", broken_copy(tmp_path, file, old, new))
    assert result.exit_code == 2
    err = error_of(result)
    assert err["error"] == "POLICY_INVALID"
    message = err["message"]
    assert f"policies/{file}" in message and key in message and reason in message
    assert result.stdout == ""


def test_policy_check_on_a_dir_without_policies(tmp_path: Path) -> None:
    result = invoke("policy", "check", tmp_path)
    assert result.exit_code == 2 and "no *.yaml" in error_of(result)["message"]


def test_settle_with_a_broken_policy_dir_exits_2(tmp_path: Path) -> None:
    broken = broken_copy(tmp_path, "210600-dandong.yaml", "period: year", "period: yearly")
    result = invoke("settle", EXAMPLE, "--policy-dir", broken)
    assert result.exit_code == 2
    assert "210600-dandong.yaml" in error_of(result)["message"]


# -- policy show -----------------------------------------------------------------------


def test_policy_show_lists_values_with_sources() -> None:
    result = invoke("policy", "show", "120000", "--date", "2025-06-01")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "# 天津市 (120000), chain 000000 → 120000"
    assert lines[1].startswith("# version 120000@2021-01-01#") and "open" in lines[1]
    by_key = {line.split(" = ", 1)[0]: line for line in lines[2:]}
    deductible = by_key["schemes.310.benefits.inpatient.fund.deductible.amount_yuan[1].value"]
    assert "= 700" in deductible and "policies/120000-tianjin.yaml" in deductible
    assert "天津市职工医保住院起付标准" in deductible and "[assumption]" in deductible
    inherited = by_key["schemes.310.benefits.outpatient_pooling.fund.ratio[0].value"]
    assert "policies/000000-national.yaml" in inherited and "[published]" in inherited
    assert "http://english.www.gov.cn/" in inherited  # the reference's url
    cap = by_key["schemes.310.layers[0].caps[0].amount_yuan"]
    assert "= 100000" in cap and "120000-tianjin.yaml" in cap
    assert all(" ← " in line for line in lines[2:])


def test_policy_show_gives_the_version_in_force_on_the_date() -> None:
    old = invoke("policy", "show", "440100", "--date", "2020-06-01")
    new = invoke("policy", "show", "440100", "--date", "2025-06-01")
    assert old.exit_code == new.exit_code == 0
    key = "schemes.310.benefits.inpatient.fund.deductible.amount_yuan[0].value"
    old_line = next(line for line in old.stdout.splitlines() if line.startswith(key))
    assert "= 1400" in old_line and "from 2015-01-01" in old_line
    assert "in force 2015-01-01 … 2020-12-31" in old.stdout
    assert old.stdout != new.stdout


@pytest.mark.parametrize(
    ("args", "field", "code"),
    [
        (["990000", "--date", "2025-06-01"], "insuplc_admdvs", "UNKNOWN_REGION"),
        (["120000", "--date", "2025-13-01"], "--date", "REQUEST_INVALID"),
        (["350100", "--date", "2021-06-01"], "begntime", "NO_POLICY_IN_FORCE"),
    ],
)
def test_policy_show_errors_exit_2(args: list[str], field: str, code: str) -> None:
    result = invoke("policy", "show", *args)
    assert result.exit_code == 2
    err = error_of(result)
    assert (err["error"], err["field"]) == (code, field)


# -- demo and the installed entry point ------------------------------------------------


def test_demo_runs() -> None:
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "== setlinfo ==" in text and "== 结算说明 ==" in text
    values = dict(line.split() for line in text.splitlines() if line.startswith("  ") and len(line.split()) == 2)
    medfee, fund, person = (float(values[k]) for k in ("medfee_sumamt", "fund_pay_sumamt", "psn_part_amt"))
    assert medfee == pytest.approx(fund + person)
    assert "起付线" in text


def test_no_arguments_prints_help() -> None:
    result = invoke()
    assert result.exit_code in (0, 2)
    assert "settle" in result.output and "policy" in result.output


def test_the_entry_point_exit_statuses(tmp_path: Path) -> None:
    entry = [sys.executable, "-c", "from yibao.cli import main; main()"]
    ok = subprocess.run([*entry, "settle", str(EXAMPLE), "--no-trace"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and json.loads(ok.stdout)["setlinfo"]["hifp_pay"] == "455.00"
    refused_path = write(tmp_path, example(mdtrtarea_admvs="120000"))
    refused = subprocess.run([*entry, "settle", str(refused_path)], capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "OFFSITE_UNFILED" in refused.stderr
    bad = subprocess.run([*entry, "settle", str(write(tmp_path, "{", "bad.json"))], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert bad.returncode == 2 and "line 1, column 2" in bad.stderr


def test_db_purge_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'y.db'}"
    assert invoke("db", "upgrade", "--database-url", url).exit_code == 0
    purged = invoke("db", "purge-keys", "--database-url", url)
    assert purged.exit_code == 0 and "removed 0 idempotency key(s) older than 48 h" in purged.stdout
    too_soon = invoke("db", "purge-keys", "--database-url", url, "--older-than-hours", "1")
    assert too_soon.exit_code == 2  # answers are kept at least 48 hours


def test_a_year_to_date_key_no_rule_reads_is_refused_with_the_valid_keys(tmp_path: Path) -> None:
    # A well-formed key of no counter of the scheme (outpatient_pool, not outpatient_pooling) would have
    # settled as if the deductible were unpaid: charged twice.
    data = example()
    data["accumulators"]["values"] = {"outpatient_pool.dedc_amt": "300.00"}
    result = invoke("settle", write(tmp_path, data))
    assert result.exit_code == 2
    err = error_of(result)
    assert (err["error"], err["field"]) == ("UNKNOWN_CODE", "accumulators.values.outpatient_pool.dedc_amt")
    assert "outpatient_pooling.dedc_amt" in err["message"]
    data["accumulators"]["values"] = {"outpatient_pooling.dedc_amt": "300.00"}
    assert invoke("settle", write(tmp_path, data)).exit_code == 0


def test_year_to_date_counts_past_a_visit_a_day_are_accepted(tmp_path: Path) -> None:
    data = example()
    data["accumulators"]["values"] = {"outpatient_pooling.visit_cnt": 2000}
    result = invoke("settle", write(tmp_path, data))
    assert result.exit_code == 0, result.output
