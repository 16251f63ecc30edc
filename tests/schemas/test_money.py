"""Money is exact (docs/reference/event.md): a decimal string and an upper-case code, never a float.

Minor units get exactly the ISO 4217 exponent's number of decimals; major units keep the
provider's digits; anything that is not a plain decimal, or longer than 38 digits, is refused.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT_DIGITS,
    Money,
    MoneyError,
    minor_units,
    money_from_major,
    money_from_minor,
)

PROPERTY = settings(
    max_examples=200,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
ALL_CODES = sorted(CURRENCY_EXPONENTS)
LARGEST = 10**MAX_AMOUNT_DIGITS - 1  # 38 nines: the longest amount that is still money


def decimals_of(value: str) -> int:
    """How many digits a decimal string has after its point."""
    _, dot, fraction = value.partition(".")
    return len(fraction) if dot else 0


def digit_count(value: str) -> int:
    return sum(char.isdigit() for char in value)


# Minor units.


@pytest.mark.parametrize(
    ("amount", "code", "value"),
    [
        (1000, "USD", "10.00"),
        (1000, "JPY", "1000"),
        (1000, "BHD", "1.000"),
        (1000, "CLF", "0.1000"),
        (5, "USD", "0.05"),
        (0, "USD", "0.00"),
        (0, "JPY", "0"),
        (-1000, "USD", "-10.00"),
        (-5, "USD", "-0.05"),
        (-5, "CLF", "-0.0005"),
        (-1000, "JPY", "-1000"),
    ],
)
def test_minor_units_get_exactly_the_iso_exponent_of_decimals(
    amount: int, code: str, value: str
) -> None:
    assert money_from_minor(amount, code) == Money(value, code)


def test_clf_has_exponent_four() -> None:
    assert CURRENCY_EXPONENTS["CLF"] == 4


@pytest.mark.parametrize(("code", "exponent"), [("USD", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3)])
def test_well_known_exponents(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent


def test_every_iso_code_is_upper_case_with_a_small_exponent() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    for code, exponent in CURRENCY_EXPONENTS.items():
        assert code.isalpha(), code
        assert code.isupper(), code
        assert len(code) == 3, code
        assert 0 <= exponent <= 4, code


def test_lower_case_code_is_upper_cased_for_minor_units() -> None:
    assert money_from_minor(1000, "usd") == Money("10.00", "USD")


def test_non_iso_code_is_refused_for_minor_units() -> None:
    with pytest.raises(MoneyError, match="USDT"):
        money_from_minor(1000, "USDT")


def test_minor_amount_of_38_digits_is_accepted() -> None:
    assert money_from_minor(LARGEST, "JPY").value == "9" * 38
    assert money_from_minor(-LARGEST, "USD").value == "-" + "9" * 36 + ".99"


@pytest.mark.parametrize("amount", [LARGEST + 1, -(LARGEST + 1), 10**400])
def test_minor_amount_of_more_than_38_digits_is_refused(amount: int) -> None:
    with pytest.raises(MoneyError, match="38 digits"):
        money_from_minor(amount, "USD")


@pytest.mark.parametrize(
    ("value", "code", "minor"),
    [("10.00", "USD", 1000), ("-0.05", "USD", -5), ("1000", "JPY", 1000), ("0.1000", "CLF", 1000)],
)
def test_minor_units_inverts_money_from_minor(value: str, code: str, minor: int) -> None:
    assert minor_units(Money(value, code)) == minor


def test_minor_units_refuses_more_decimals_than_the_currency_has() -> None:
    with pytest.raises(MoneyError, match="more decimals"):
        minor_units(Money("10.001", "USD"))


def test_minor_units_refuses_a_non_iso_currency() -> None:
    with pytest.raises(MoneyError):
        minor_units(Money("1", "USDT"))


def test_minor_units_is_exact_at_38_digits() -> None:
    # Decimal's default context holds 28 digits; a ledger amount of 38 must not be rounded.
    assert minor_units(money_from_minor(10**37 + 1, "USD")) == 10**37 + 1


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_iso_code_round_trips_everyday_minor_amounts(code: str) -> None:
    exponent = CURRENCY_EXPONENTS[code]
    for amount in (0, 1, -1, 7, 1000, -123456789, 10**18 + 1):
        money = money_from_minor(amount, code)
        assert money.currency == code
        assert decimals_of(money.value) == exponent, (amount, money)
        assert minor_units(money) == amount, (amount, money)


@settings(PROPERTY, max_examples=30)
@given(data=st.data())
def test_every_iso_code_round_trips_any_minor_amount_up_to_38_digits(data: st.DataObject) -> None:
    for code in ALL_CODES:
        amount = data.draw(st.integers(min_value=-LARGEST, max_value=LARGEST), label=code)
        money = money_from_minor(amount, code)
        assert decimals_of(money.value) == CURRENCY_EXPONENTS[code], (code, amount, money)
        assert minor_units(money) == amount, (code, amount, money)


@PROPERTY
@given(
    amount=st.integers(min_value=-LARGEST, max_value=LARGEST),
    code=st.sampled_from(ALL_CODES),
)
@example(amount=10**37 + 1, code="USD")
def test_minor_units_round_trip_for_any_amount_and_code(amount: int, code: str) -> None:
    money = money_from_minor(amount, code)
    assert decimals_of(money.value) == CURRENCY_EXPONENTS[code]
    assert int(money.value.replace(".", "")) == amount
    assert minor_units(money) == amount


@PROPERTY
@given(amount=st.integers(min_value=-LARGEST, max_value=LARGEST), code=st.sampled_from(ALL_CODES))
def test_minor_amount_keeps_its_sign_and_digits(amount: int, code: str) -> None:
    value = money_from_minor(amount, code).value
    assert value.startswith("-") == (amount < 0)
    assert value.replace("-", "").replace(".", "").lstrip("0") == str(abs(amount)).lstrip("0")


# Major units.


@pytest.mark.parametrize(
    ("amount", "value"),
    [
        ("250.5", "250.5"),
        ("10", "10"),
        ("10.00", "10.00"),
        ("0.000001", "0.000001"),
        ("-250.5", "-250.5"),
        ("-0.00", "0.00"),
        (Decimal("1e3"), "1000"),
        (Decimal("1E+3"), "1000"),
        (Decimal("250.50"), "250.50"),
        (Decimal("-12.5"), "-12.5"),
        (Decimal("1E-8"), "0.00000001"),
        (Decimal("-0"), "0"),
    ],
)
def test_major_units_keep_the_providers_digits(amount: Decimal | str, value: str) -> None:
    assert money_from_major(amount, "USD") == Money(value, "USD")


def test_lower_case_code_is_upper_cased_for_major_units() -> None:
    assert money_from_major("1.5", "eur") == Money("1.5", "EUR")


def test_non_iso_code_is_kept_for_major_units() -> None:
    assert money_from_major("1.25", "USDT") == Money("1.25", "USDT")
    assert money_from_major("0.5", "btc") == Money("0.5", "BTC")


@pytest.mark.parametrize(
    "amount",
    [
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        " 5",
        "5 ",
        "1,000",
        "abc",
        "",
        "-",
        "1e3",
        "+5",
        ".5",
        "5.",
        "1.2.3",
        "0x10",
        "\u0661\u0662",  # Arabic-Indic digits are digits to Python, not to a ledger
    ],
)
def test_major_amount_that_is_not_a_plain_decimal_is_refused(amount: str) -> None:
    with pytest.raises(MoneyError):
        money_from_major(amount, "USD")


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity")])
def test_major_decimal_that_is_not_finite_is_refused(amount: Decimal) -> None:
    with pytest.raises(MoneyError):
        money_from_major(amount, "USD")


@pytest.mark.parametrize(
    "amount",
    [
        "9" * 38,
        "-" + "9" * 38,
        "9" * 37 + ".9",
        "0." + "1" * 37,
        Decimal("9" * 38),
        Decimal("1e37"),
        Decimal("0." + "1" * 37),
    ],
)
def test_major_amount_of_38_digits_is_accepted(amount: Decimal | str) -> None:
    assert Decimal(money_from_major(amount, "USD").value) == Decimal(amount)


@pytest.mark.parametrize(
    "amount",
    [
        "1" * 39,
        "-" + "1" * 39,
        "1" * 20 + "." + "1" * 19,
        "1" * 41,
        Decimal("1" * 39),
        Decimal("1e38"),
        Decimal("1e999999"),
        Decimal("1e-39"),
        Decimal("12." + "3" * 38),
        Decimal("12345678901234567890.12345678901234567890"),
    ],
    ids=str,
)
def test_major_amount_of_more_than_38_digits_is_refused(amount: Decimal | str) -> None:
    with pytest.raises(MoneyError, match=r"38 digits|not a decimal"):
        money_from_major(amount, "USD")


@pytest.mark.parametrize("code", ["", "U", "US D", "€UR", "USD\n", "A" * 13, "usd;"])
def test_something_that_is_not_a_currency_code_is_refused(code: str) -> None:
    with pytest.raises(MoneyError):
        money_from_major("1", code)
    with pytest.raises(MoneyError):
        money_from_minor(1, code)


def test_error_quotes_at_most_a_short_prefix_of_the_value() -> None:
    with pytest.raises(MoneyError) as caught:
        money_from_major("x" * 10_000, "USD")
    assert len(str(caught.value)) < 100


MAJOR_TEXT = st.from_regex(r"-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?", fullmatch=True)


@PROPERTY
@given(amount=MAJOR_TEXT, code=st.sampled_from([*ALL_CODES, "USDT", "BTC"]))
def test_major_string_amount_keeps_its_digits_exactly(amount: str, code: str) -> None:
    money = money_from_major(amount, code)
    assert money.currency == code
    if Decimal(amount) == 0:
        assert money.value == amount.removeprefix("-")
    else:
        assert money.value == amount


@PROPERTY
@given(
    digits=st.integers(min_value=-(10**40), max_value=10**40),
    exponent=st.integers(min_value=-MAX_AMOUNT_DIGITS, max_value=0),
)
@example(digits=int("12" + "3" * 38), exponent=-38)
def test_major_decimal_amount_keeps_its_value_and_decimals(digits: int, exponent: int) -> None:
    amount = Decimal(f"{digits}E{exponent}")  # exact: scaleb would round to 28 digits
    total_digits = max(len(str(abs(digits))), -exponent)
    if total_digits > MAX_AMOUNT_DIGITS:
        with pytest.raises(MoneyError):
            money_from_major(amount, "USD")
        return
    money = money_from_major(amount, "USD")
    assert Decimal(money.value) == amount
    assert decimals_of(money.value) == -exponent
    assert digit_count(money.value) <= MAX_AMOUNT_DIGITS + 1  # at most a leading "0."


# Whatever is accepted is Money its own schema accepts (what decode_event checks downstream).


def assert_schema_valid(money: Money) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(money), type=Money)
    assert decoded == money


LOOSE_MAJOR_TEXT = st.from_regex(r"-?[0-9]{1,60}(\.[0-9]{1,45})?", fullmatch=True)
ZERO_PADDED_TEXT = st.builds(
    lambda sign, zeros, rest: sign + "0" * zeros + rest.removeprefix("-"),
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=70),
    MAJOR_TEXT,
)


@PROPERTY
@given(amount=LOOSE_MAJOR_TEXT | MAJOR_TEXT | ZERO_PADDED_TEXT)
def test_accepted_major_text_is_always_schema_valid_money(amount: str) -> None:
    try:
        money = money_from_major(amount, "USD")
    except MoneyError:
        return
    assert_schema_valid(money)
    assert digit_count(money.value.lstrip("-0.")) <= MAX_AMOUNT_DIGITS


@PROPERTY
@given(
    digits=st.integers(min_value=-(10**45), max_value=10**45),
    exponent=st.integers(min_value=-50, max_value=50),
)
def test_accepted_major_decimal_is_always_schema_valid_money(digits: int, exponent: int) -> None:
    try:
        money = money_from_major(Decimal(f"{digits}E{exponent}"), "USD")
    except MoneyError:
        return
    assert_schema_valid(money)


@PROPERTY
@given(amount=st.integers(min_value=-(10**40), max_value=10**40), code=st.sampled_from(ALL_CODES))
def test_accepted_minor_amount_is_always_schema_valid_money(amount: int, code: str) -> None:
    try:
        money = money_from_minor(amount, code)
    except MoneyError:
        return
    assert_schema_valid(money)


@pytest.mark.parametrize(
    "amount",
    ["0" * 50 + "1", "-" + "0" * 60 + ".5", "0" * 39 + "1.25"],
    ids=["50-zeros", "neg", "39"],
)
def test_leading_zeros_never_make_money_longer_than_its_schema_allows(amount: str) -> None:
    # Refusing and returning schema-valid Money are both fine; Money decode_event rejects is not.
    try:
        money = money_from_major(amount, "USD")
    except MoneyError:
        return
    assert_schema_valid(money)
