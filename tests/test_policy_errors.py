"""Invalid policy files are refused with the file, the key path and the reason;
valid ones inherit along the region chain and resolve by date as documented."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from yibao import PolicyError, PolicyStore, RequestError

ROOT_FILE = "000000-root.yaml"
CHILD_FILE = "110000-child.yaml"
FUND = "policy.schemes.310.benefits.care.fund"

ROOT = textwrap.dedent(
    """\
    region: "000000"
    name: root
    valid_from: 2020-01-01
    references:
      ref-a: {title: Reference A, status: published, url: "https://example.org/a"}
      ref-b: {title: Reference B, status: assumption}
    policy:
      person_categories: {"1101": in_service, "1201": retired}
      level_groups: {"01": level_3, "08": level_1}
      identities: {dibao: 低保}
      schemes:
        "310":
          title: employee
          benefits:
            care:
              title: care
              med_types: ["11"]
              fund:
                title: root pool
                fund_pay_type: "310100"
                deductible:
                  period: year
                  top_up: true
                  amount_yuan: 300
                ratio:
                  - {person: retired, value: "0.65"}
                  - "0.60"
                caps:
                  - name: outpatient_pool
                    amount_yuan: {value: 4000, reference: ref-a}
    """
)

CHILD = textwrap.dedent(
    """\
    region: "110000"
    name: child
    parent: "000000"
    valid_from: 2020-01-01
    references:
      ref-c: {title: Child reference, status: published}
    policy:
      schemes:
        "310":
          benefits:
            care:
              fund:
                title: child pool
    """
)


def child_store(child: str) -> PolicyStore:
    return PolicyStore.from_texts({ROOT_FILE: ROOT, CHILD_FILE: child})


def refused(texts: dict[str, str]) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        PolicyStore.from_texts(texts)
    err = info.value
    assert err.code == "POLICY_INVALID"
    # The message itself names the file, the key path and the reason.
    assert err.file in str(err) and err.key in str(err) and err.reason in str(err)
    return err


def replaced(old: str, new: str, text: str = ROOT) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


RATIO_BLOCK = """\
            ratio:
              - {person: retired, value: "0.65"}
              - "0.60"
"""
DEDUCTIBLE_AMOUNT = "              amount_yuan: 300\n"

# (id, root text, key path, words of the reason)
ROOT_CASES = [
    ("ratio above 1", replaced('- "0.60"', '- "1.5"'), f"{FUND}.ratio[1]", "比例须在 [0, 1] 之内"),
    ("ratio below 0", replaced('value: "0.65"', 'value: "-0.1"'), f"{FUND}.ratio[0]", "比例须在 [0, 1] 之内"),
    (
        "ratio with 5 decimals",
        replaced('- "0.60"', "- 0.60001"),
        f"{FUND}.ratio[1]",
        "不是合法比例 (至多 4 位小数)",
    ),
    (
        "unsorted band thresholds",
        replaced(
            RATIO_BLOCK,
            "            bands:\n"
            '              - {from_yuan: 0, ratio: "0.5"}\n'
            '              - {from_yuan: 5000, ratio: "0.6"}\n'
            '              - {from_yuan: 3000, ratio: "0.7"}\n',
        ),
        FUND,
        "bands[2].from_yuan must be greater than bands[1].from_yuan",
    ),
    (
        "first band not at 0",
        replaced(RATIO_BLOCK, '            bands:\n              - {from_yuan: 100, ratio: "0.5"}\n'),
        FUND,
        "bands[0].from_yuan must be 0",
    ),
    (
        "overlapping version dates",
        replaced(
            DEDUCTIBLE_AMOUNT,
            "              amount_yuan:\n"
            "                versions:\n"
            "                  - {from: 2021-01-01, to: 2022-12-31, value: 300}\n"
            "                  - {from: 2022-06-01, value: 400}\n",
        ),
        f"{FUND}.deductible.amount_yuan.versions[1].from",
        "overlaps the previous version",
    ),
    (
        "unsorted versions",
        replaced(
            DEDUCTIBLE_AMOUNT,
            "              amount_yuan:\n"
            "                versions:\n"
            "                  - {from: 2023-01-01, value: 300}\n"
            "                  - {from: 2022-01-01, to: 2022-06-30, value: 400}\n",
        ),
        f"{FUND}.deductible.amount_yuan.versions[1].from",
        "versions must be sorted by 'from'",
    ),
    (
        "version ending before it starts",
        replaced(
            DEDUCTIBLE_AMOUNT,
            "              amount_yuan:\n"
            "                versions:\n"
            "                  - {from: 2023-01-01, to: 2022-01-01, value: 300}\n",
        ),
        f"{FUND}.deductible.amount_yuan.versions[0].to",
        "before it starts",
    ),
    ("unknown top-level key", ROOT + "colour: red\n", "colour", "unknown key"),
    (
        "unknown nested key",
        replaced("            fund_pay_type:", "            ratioo: 1\n            fund_pay_type:"),
        f"{FUND}.ratioo",
        "Extra inputs are not permitted",
    ),
    (
        "unknown deeply nested key",
        replaced("              top_up: true\n", "              top_up: true\n              topup: true\n"),
        f"{FUND}.deductible.topup",
        "Extra inputs are not permitted",
    ),
    (
        "unknown key in a version",
        replaced(
            DEDUCTIBLE_AMOUNT,
            "              amount_yuan:\n"
            "                versions:\n"
            "                  - {form: 2021-01-01, value: 300}\n",
        ),
        f"{FUND}.deductible.amount_yuan.versions[0].form",
        "unknown key",
    ),
    ("missing top-level value", replaced("name: root\n", ""), "name", "missing required value"),
    ("missing nested value", replaced("            title: root pool\n", ""), f"{FUND}.title", "Field required"),
    ("missing ratio or bands", replaced(RATIO_BLOCK, ""), FUND, "missing required value: 'ratio' or 'bands'"),
    (
        "missing version value",
        replaced(
            DEDUCTIBLE_AMOUNT,
            "              amount_yuan:\n                versions:\n                  - {from: 2021-01-01}\n",
        ),
        f"{FUND}.deductible.amount_yuan.versions[0].value",
        "missing required value",
    ),
    (
        "unknown reference",
        replaced("reference: ref-a}", "reference: nope}"),
        f"{FUND}.caps[0].amount_yuan.reference",
        "unknown reference 'nope'",
    ),
    (
        "last table row conditional",
        replaced('- "0.60"', '- {person: in_service, value: "0.60"}'),
        f"{FUND}.ratio",
        "the last row must have no conditions",
    ),
    (
        "unconditional row before the last",
        replaced('- {person: retired, value: "0.65"}', '- "0.65"'),
        f"{FUND}.ratio",
        "row 0 has no conditions",
    ),
    (
        "unknown person category in a condition",
        replaced("person: retired,", "person: pensioner,"),
        f"{FUND}.ratio[0].person",
        "unknown value 'pensioner'",
    ),
    (
        "unknown level in a condition",
        replaced("person: retired,", "level: level_9,"),
        f"{FUND}.ratio[0].level",
        "unknown value 'level_9'",
    ),
    (
        "unknown identity in a condition",
        replaced("person: retired,", "identity: [dibao, rich],"),
        f"{FUND}.ratio[0].identity",
        "unknown value 'rich'",
    ),
    (
        "amount with 3 decimals (YAML float)",
        replaced("amount_yuan: 300", "amount_yuan: 300.125"),
        f"{FUND}.deductible.amount_yuan",
        "不是合法金额 (至多 14 位整数、2 位小数)",
    ),
    (
        "amount with 3 decimals (string)",
        replaced("amount_yuan: 300", "amount_yuan: '300.125'"),
        f"{FUND}.deductible.amount_yuan",
        "不是合法金额 (至多 14 位整数、2 位小数)",
    ),
    (
        "negative amount",
        replaced("amount_yuan: 300", "amount_yuan: -300"),
        f"{FUND}.deductible",
        "金额不能为负数",
    ),
    (
        "top_up with a per-visit deductible",
        replaced("period: year", "period: visit"),
        f"{FUND}.deductible",
        "top_up (累计补差) needs period: year",
    ),
    (
        "layer out of one-stop order",
        ROOT
        + "      layers:\n"
        + '        - {name: assist, title: a, field: maf_pay, fund_pay_type: "610100", benefits: [care],'
        + ' ratio: "0.7"}\n'
        + '        - {name: large, title: l, field: hifob_pay, fund_pay_type: "330100", benefits: [care],'
        + ' base: over_cap, ratio: "0.9"}\n',
        "policy.schemes.310.layers[1].field",
        "hifob_pay must come before the layers above it",
    ),
    (
        "layer naming an unknown benefit",
        ROOT
        + "      layers:\n"
        + '        - {name: assist, title: a, field: maf_pay, fund_pay_type: "610100", benefits: [dental],'
        + ' ratio: "0.7"}\n',
        "policy.schemes.310.layers[0].benefits",
        "unknown benefit 'dental'",
    ),
    ("bad region code", replaced('region: "000000"', 'region: "0000"'), "region", "6-digit"),
    ("bad date", replaced("valid_from: 2020-01-01", "valid_from: soon"), "valid_from", "expected a date"),
]


@pytest.mark.parametrize(("root", "key", "reason"), [c[1:] for c in ROOT_CASES], ids=[c[0] for c in ROOT_CASES])
def test_invalid_root_policy_names_file_key_and_reason(root: str, key: str, reason: str) -> None:
    err = refused({ROOT_FILE: root})
    assert err.file == ROOT_FILE
    # Table rows may be reported down to the row's value ("ratio[1].value"): the prefix is the YAML path.
    assert err.key == key or err.key.startswith((key + ".", key + "[")), (err.key, key)
    assert reason in err.reason, err.reason


def test_duplicate_yaml_key_names_file_line_and_key() -> None:
    text = replaced("            fund_pay_type:", "            title: again\n            fund_pay_type:")
    err = refused({ROOT_FILE: text})
    assert err.file == ROOT_FILE
    assert "duplicate key 'title'" in err.reason
    assert "line 20" in err.reason  # the second 'title' of the fund


def test_yaml_syntax_error_names_file_and_line() -> None:
    err = refused({ROOT_FILE: ROOT + "  bad: [unclosed\n"})
    assert err.file == ROOT_FILE and "line" in err.reason


@pytest.mark.parametrize(
    ("root", "key"),
    [
        (
            replaced("            fund_pay_type:", "            title: again\n            fund_pay_type:"),
            f"{FUND}.title",
        ),
        (replaced("amount_yuan: 300", "amount_yuan: 300.125"), f"{FUND}.deductible.amount_yuan"),
    ],
    ids=["duplicate key", "scalar table"],
)
def test_error_key_is_the_exact_yaml_path(root: str, key: str) -> None:
    assert refused({ROOT_FILE: root}).key == key


# -- the region chain ----------------------------------------------------------------


def test_a_parent_that_does_not_exist() -> None:
    err = refused({ROOT_FILE: ROOT, CHILD_FILE: replaced('parent: "000000"', 'parent: "990000"', CHILD)})
    assert (err.file, err.key) == (CHILD_FILE, "parent")
    assert "990000" in err.reason


def test_a_parent_cycle() -> None:
    a = replaced('parent: "000000"', 'parent: "120000"', CHILD)
    b = replaced('region: "110000"', 'region: "120000"', replaced('parent: "000000"', 'parent: "110000"', CHILD))
    err = refused({ROOT_FILE: ROOT, "110000-a.yaml": a, "120000-b.yaml": b})
    assert err.key == "parent" and err.file in ("110000-a.yaml", "120000-b.yaml")
    assert "loop" in err.reason


def test_a_region_that_is_its_own_parent() -> None:
    err = refused({ROOT_FILE: ROOT, CHILD_FILE: replaced('parent: "000000"', 'parent: "110000"', CHILD)})
    assert (err.file, err.key) == (CHILD_FILE, "parent")


def test_a_region_defined_twice() -> None:
    err = refused({ROOT_FILE: ROOT, "000000-again.yaml": ROOT})
    assert err.key == "region" and "also defined" in err.reason


def test_an_error_in_a_child_names_the_child_file() -> None:
    child = CHILD + '            ratio: [{person: pensioner, value: "0.5"}, "0.4"]\n'
    err = refused({ROOT_FILE: ROOT, CHILD_FILE: child})
    assert (err.file, err.key) == (CHILD_FILE, f"{FUND}.ratio[0].person")
    child = CHILD + '            ratio: "1.01"\n'
    err = refused({ROOT_FILE: ROOT, CHILD_FILE: child})
    assert err.file == CHILD_FILE and err.key.startswith(f"{FUND}.ratio") and "[0, 1]" in err.reason


def test_a_child_uses_the_references_of_its_ancestors() -> None:
    child = CHILD + '            ratio: {value: "0.7", reference: ref-b}\n'
    policy = child_store(child).resolve("110000", dt.date(2024, 1, 1))
    source = policy.source_for("schemes.310.benefits.care.fund.ratio")
    assert source is not None and source.file == CHILD_FILE
    assert source.reference is not None and source.reference.key == "ref-b" and source.reference.status == "assumption"
    # ... but not those of an unrelated region.
    err = refused({ROOT_FILE: replaced("  ref-b: {title: Reference B, status: assumption}\n", ""), CHILD_FILE: child})
    assert (err.file, err.key) == (CHILD_FILE, f"{FUND}.ratio.reference")


# -- inheritance semantics -----------------------------------------------------------


def test_child_overriding_one_leaf_keeps_the_parent_siblings() -> None:
    policy = child_store(CHILD).resolve("110000", dt.date(2024, 6, 1))
    fund = policy.params.schemes["310"].benefits["care"].fund
    assert fund.title == "child pool"
    assert fund.fund_pay_type == "310100"
    assert [row.value for row in fund.ratio.rows] == [6500, 6000]  # type: ignore[union-attr]
    assert fund.deductible is not None and fund.deductible.top_up and fund.deductible.period == "year"
    assert fund.caps[0].amount_fen.rows[0].value == 400_000
    assert policy.chain == ("000000", "110000")
    title = policy.source_for("schemes.310.benefits.care.fund.title")
    ratio = policy.source_for("schemes.310.benefits.care.fund.ratio")
    assert title is not None and title.file == CHILD_FILE
    assert ratio is not None and ratio.file == ROOT_FILE
    # The parent's own policy is untouched by its child.
    root = child_store(CHILD).resolve("000000", dt.date(2024, 6, 1))
    assert root.params.schemes["310"].benefits["care"].fund.title == "root pool"


def test_a_cited_block_in_the_child_replaces_the_parent_block_whole() -> None:
    child = (
        CHILD
        + "            deductible:\n              value: {period: visit, amount_yuan: 100}\n"
        + ("              reference: ref-c\n")
    )
    policy = child_store(child).resolve("110000", dt.date(2024, 6, 1))
    deductible = policy.params.schemes["310"].benefits["care"].fund.deductible
    # A leaf-wise merge would have kept the parent's top_up (and then failed: top_up needs period: year).
    assert deductible is not None and deductible.period == "visit" and deductible.top_up is False
    assert [row.value for row in deductible.amount_fen.rows] == [10_000]
    source = policy.source_for("schemes.310.benefits.care.fund.deductible.amount_yuan")
    assert source is not None and source.file == CHILD_FILE
    assert source.reference is not None and source.reference.title == "Child reference"
    assert policy.source_for("schemes.310.benefits.care.fund.deductible.top_up") is None


def test_a_dated_block_in_the_child_replaces_the_parent_block_whole() -> None:
    child = CHILD + (
        "            deductible:\n"
        "              versions:\n"
        "                - from: 2024-01-01\n"
        "                  value: {period: visit, amount_yuan: 100}\n"
    )
    store_ = child_store(child)
    inside = store_.resolve("110000", dt.date(2024, 6, 1)).params.schemes["310"].benefits["care"].fund.deductible
    assert inside is not None and inside.period == "visit" and not inside.top_up
    before = store_.resolve("110000", dt.date(2023, 6, 1)).params.schemes["310"].benefits["care"].fund.deductible
    assert before is not None and before.period == "year" and before.top_up


DATED_CHILD = CHILD + (
    "            ratio:\n"
    "              versions:\n"
    '                - {from: 2024-01-01, to: 2024-12-31, value: "0.90", reference: ref-c}\n'
    '                - {from: 2026-01-01, value: "0.95"}\n'
)


@pytest.mark.parametrize(
    ("day", "ratios", "from_file", "effective_from", "effective_to"),
    [
        ("2023-06-01", [6500, 6000], ROOT_FILE, "2020-01-01", "2023-12-31"),
        ("2024-01-01", [9000], CHILD_FILE, "2024-01-01", "2024-12-31"),
        ("2024-12-31", [9000], CHILD_FILE, "2024-01-01", "2024-12-31"),
        ("2025-01-01", [6500, 6000], ROOT_FILE, "2025-01-01", "2025-12-31"),
        ("2026-03-01", [9500], CHILD_FILE, "2026-01-01", None),
    ],
)
def test_a_dated_child_value_outside_its_versions_lets_the_parent_show_through(
    day: str, ratios: list[int], from_file: str, effective_from: str, effective_to: str | None
) -> None:
    policy = child_store(DATED_CHILD).resolve("110000", dt.date.fromisoformat(day))
    fund = policy.params.schemes["310"].benefits["care"].fund
    assert [row.value for row in fund.ratio.rows] == ratios  # type: ignore[union-attr]
    assert policy.effective_from == dt.date.fromisoformat(effective_from)
    assert policy.effective_to == (dt.date.fromisoformat(effective_to) if effective_to else None)
    assert policy.version.startswith(f"110000@{effective_from}#")
    source = policy.source_for("schemes.310.benefits.care.fund.ratio")
    assert source is not None and source.file == from_file


def test_resolve_picks_the_version_in_force_and_source_for_returns_the_reference() -> None:
    store_ = child_store(DATED_CHILD)
    assert store_.versions("110000") == [dt.date(2020, 1, 1), dt.date(2024, 1, 1), dt.date(2025, 1, 1),
                                         dt.date(2026, 1, 1)]  # fmt: skip
    policy = store_.resolve("110000", dt.date(2024, 7, 1))
    source = policy.source_for("schemes.310.benefits.care.fund.ratio")
    assert source is not None
    assert source.effective_from == dt.date(2024, 1, 1)
    assert source.reference is not None and (source.reference.key, source.reference.status) == ("ref-c", "published")
    later = store_.resolve("110000", dt.date(2026, 7, 1)).source_for("schemes.310.benefits.care.fund.ratio")
    assert later is not None and later.effective_from == dt.date(2026, 1, 1) and later.reference is None
    cap = policy.source_for("schemes.310.benefits.care.fund.caps[0].amount_yuan")
    assert cap is not None and cap.file == ROOT_FILE
    assert cap.reference is not None and cap.reference.url == "https://example.org/a"
    assert policy.source_for("schemes.310.no_such_key") is None
    # The same version is returned for every day it is in force.
    assert store_.resolve("110000", dt.date(2024, 12, 31)) is policy


def test_resolve_finds_the_governing_region_and_refuses_unknown_ones() -> None:
    store_ = child_store(CHILD)
    assert store_.resolve("110105", dt.date(2024, 1, 1)).region == "110000"  # a district of the child's city
    assert store_.resolve("000000", dt.date(2024, 1, 1)).region == "000000"
    with pytest.raises(RequestError) as info:
        store_.resolve("990000", dt.date(2024, 1, 1))
    assert info.value.code == "UNKNOWN_REGION" and info.value.field == "insuplc_admdvs"
    with pytest.raises(RequestError) as info:
        store_.resolve("110000", dt.date(2019, 12, 31))
    assert info.value.code == "NO_POLICY_IN_FORCE"


def test_invalid_values_are_found_at_every_version_date_at_load() -> None:
    # Valid today, invalid from 2030: refused at load, not at the first settlement in 2030.
    child = (
        CHILD + "            ratio:\n              versions:\n" + '                - {from: 2030-01-01, value: "1.2"}\n'
    )
    err = refused({ROOT_FILE: ROOT, CHILD_FILE: child})
    assert err.file == CHILD_FILE and "2030-01-01" in err.reason


def test_the_bundled_presets_load() -> None:
    from pathlib import Path

    presets = Path(__file__).resolve().parents[1] / "src" / "yibao" / "data" / "policies"
    loaded = PolicyStore.load_dir(presets)
    assert {"000000", "120000", "210600"} <= set(loaded.regions)
