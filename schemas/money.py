"""Exact money: a decimal string and an upper-case currency code, never a float.

Providers give amounts two ways. *Minor units* are integers counted in the currency's smallest
unit (1000 USD cents); they are converted with the ISO 4217 exponent and get exactly that many
decimals. *Major units* are the amount as written ("250.5"); they keep the provider's digits.
Codes outside ISO 4217 (crypto assets such as USDT) are kept as given, upper-cased, and can only
be given in major units: we do not guess a token's decimals.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

import msgspec
from iso4217 import Currency

__all__ = [
    "CURRENCY_EXPONENTS",
    "MAX_AMOUNT_DIGITS",
    "Money",
    "MoneyError",
    "currency_exponent",
    "minor_units",
    "money_from_major",
    "money_from_minor",
    "normalize_currency_code",
]

# Every active ISO 4217 code and its exponent (minor unit digits), from the published list one
# that the `iso4217` package ships. Funds and metals whose minor unit is "N.A." (XAU, XDR, ...)
# count as exponent 0: an integer amount of them is already whole units.
CURRENCY_EXPONENTS: dict[str, int] = {
    currency.code: currency.exponent or 0 for currency in Currency
}

# An amount longer than this is not money but an attack on the formatter: Decimal("1e999999999")
# would print a gigabyte of zeros. 38 digits is what SQL DECIMAL and most ledgers can hold.
MAX_AMOUNT_DIGITS = 38

_CURRENCY_CODE = re.compile(r"[A-Za-z0-9]{2,12}")
_MAJOR_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")

DecimalString = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        max_length=MAX_AMOUNT_DIGITS + 3,  # a sign, "0." and 38 decimals
        description="A decimal number as a string: never a float.",
    ),
]
CurrencyCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Z0-9]{2,12}$",
        description="ISO 4217 code, or a crypto asset's ticker as the provider gives it.",
    ),
]


class Money(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An amount of one currency."""

    value: DecimalString
    currency: CurrencyCode


class MoneyError(ValueError):
    """An amount or currency that cannot be money; the message says why (quoting at most a short
    prefix of the offending value)."""


def normalize_currency_code(code: str) -> str:
    """Upper-case a currency code, refusing what cannot be one ("usd" -> "USD")."""
    if not _CURRENCY_CODE.fullmatch(code):
        raise MoneyError(f"not a currency code: {code[:16]!r}")
    return code.upper()


def currency_exponent(code: str) -> int | None:
    """The ISO 4217 exponent of `code`, or None when it is not an ISO 4217 currency."""
    return CURRENCY_EXPONENTS.get(code)


def money_from_minor(amount: int, currency: str) -> Money:
    """Money from an integer count of minor units: 1000 USD -> "10.00", 1000 JPY -> "1000".

    String arithmetic, not Decimal: it is exact at any size and needs no context precision.
    """
    code = normalize_currency_code(currency)
    exponent = currency_exponent(code)
    if exponent is None:
        raise MoneyError(f"{code} is not an ISO 4217 currency, so its minor units are unknown")
    digits = str(abs(amount))
    if len(digits) > MAX_AMOUNT_DIGITS:
        raise MoneyError(f"amount has more than {MAX_AMOUNT_DIGITS} digits")
    sign = "-" if amount < 0 else ""
    if exponent == 0:
        return Money(sign + digits, code)
    digits = digits.rjust(exponent + 1, "0")
    return Money(f"{sign}{digits[:-exponent]}.{digits[-exponent:]}", code)


def money_from_major(amount: Decimal | str, currency: str) -> Money:
    """Money from an amount in major units, keeping the provider's digits ("250.5" stays "250.5").

    A string must be a plain decimal; a Decimal (decoded from a JSON number) may carry an
    exponent (1e3) and is written out in full ("1000").
    """
    code = normalize_currency_code(currency)
    if isinstance(amount, str):
        # The length check first: no regular expression runs over a megabyte of digits.
        if len(amount) > 2 * MAX_AMOUNT_DIGITS or not _MAJOR_AMOUNT.fullmatch(amount):
            raise MoneyError(f"not a decimal amount: {amount[:24]!r}")
        negative = amount.startswith("-")
        whole, dot, fraction = amount.lstrip("-").partition(".")
        # Leading zeros carry no digit of the amount: "007.50" is "7.50".
        whole = whole.lstrip("0") or "0"
        digits = len(whole) + len(fraction)
        value = ("-" if negative else "") + whole + dot + fraction
    else:
        if not amount.is_finite():
            raise MoneyError("amount is not a finite number")
        # Counted from the tuple, before formatting: Decimal("1e999999999") must never be
        # written out. Digits = integer digits + decimals of the plain notation.
        _, coefficient, exponent = amount.as_tuple()
        assert isinstance(exponent, int)  # finite, checked above
        if coefficient == (0,):
            digits = max(-exponent, 1)  # zero: 0E+100 is written "0", 0E-2 "0.00"
        elif exponent >= 0:
            digits = len(coefficient) + exponent
        else:
            digits = max(len(coefficient) + exponent, 0) - exponent
        value = ""
    if digits > MAX_AMOUNT_DIGITS:
        raise MoneyError(f"amount has more than {MAX_AMOUNT_DIGITS} digits")
    return Money(_strip_negative_zero(value or format(amount, "f")), code)


def minor_units(money: Money) -> int:
    """The inverse of money_from_minor, for ISO 4217 currencies: "10.00" USD -> 1000."""
    exponent = currency_exponent(money.currency)
    if exponent is None:
        raise MoneyError(f"{money.currency} is not an ISO 4217 currency")
    if not _MAJOR_AMOUNT.fullmatch(money.value):
        raise MoneyError(f"not a decimal amount: {money.value[:24]!r}")
    # String arithmetic, as in money_from_minor: exact at any length, unlike a Decimal context.
    negative = money.value.startswith("-")
    whole, _, fraction = money.value.lstrip("-").partition(".")
    if len(fraction.rstrip("0")) > exponent:
        raise MoneyError(f"{money.value} has more decimals than {money.currency} allows")
    units = int(whole + fraction[:exponent].ljust(exponent, "0"))
    return -units if negative else units


def _strip_negative_zero(value: str) -> str:
    # "-0.00" is a formatting accident, not a debit.
    return value[1:] if value.startswith("-") and not value.strip("-0.") else value
