"""The calculator tool: arithmetic on the numbers a model writes, parsed with `ast`, never eval'd.

It takes numbers, + - * / // % ** (or ^), unary minus and parentheses, and nothing else: names,
calls, attributes and strings are refused with a sentence saying what it accepts. Values are
exact fractions, so `(7/2)*2` is `7` and `0.1+0.2` is `0.3`; sizes are capped before they are
computed, so `9**9**9` is refused at once instead of hanging. It forgives what small models
write: `12 x 3`, `12 × 3`, `8 ÷ 2`, `1,250 + 3`, a trailing `=`.

    >>> calc = Calculator()
    >>> calc.run("12 x 3"), calc.run("7/2"), calc.run("1,250 + 3 ="), calc.run("1/3")
    ('36', '3.5', '1253', '0.3333333333')
"""

from __future__ import annotations

import ast
import math
import operator
import re
from decimal import Decimal, localcontext
from fractions import Fraction

from rest_loop.agent.tools.base import Tool

MAX_CHARS = 300  # longer input is not an arithmetic step; also bounds the parser's recursion
MAX_DIGITS = 100  # a result past 10**100 is a mistake in any word problem, and stays cheap to compute
MAX_PARTS = 400  # digits of a fraction's numerator or denominator (tiny values like 10**-300 stay exact)
DECIMALS = 10  # non-integer results are rounded to this many places
ACCEPTS = "it takes numbers, + - * / // % ** and parentheses, e.g. (4+5)*2"

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: None}  # Pow: checked first, see power()
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# what the refusal says for the things a model might try
REFUSED = {ast.Name: "names", ast.Call: "function calls", ast.Attribute: "attributes", ast.Subscript: "indexing",
           ast.Compare: "comparisons", ast.BoolOp: "and/or", ast.Lambda: "lambdas", ast.Tuple: "lists of values",
           ast.List: "lists", ast.Dict: "dicts", ast.Set: "sets", ast.JoinedStr: "strings",
           ast.IfExp: "conditionals", ast.BinOp: "operators other than + - * / // % **",
           ast.UnaryOp: "operators other than + - * / // % **"}
LENIENT = [  # (pattern, replacement): how people write arithmetic -> Python's spelling
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # 1,250 -> 1250 (thousands separators only)
    (re.compile(r"(?<!\b0)(?<=[\d).\s])[xX](?=[\s\d(.])"), "*"),  # 12 x 3 (between operands; 0x10 stays hex)
    (re.compile(r"[×⋅·]"), "*"),
    (re.compile(r"÷"), "/"),
    (re.compile(r"[$€£]"), ""),  # $12 + $3
    (re.compile(r"[−–]"), "-"),  # unicode minus and en dash
    (re.compile(r"\^"), "**"),  # 2^10 means a power, not Python's xor
    (re.compile(r"=\s*$"), ""),
]


class Calculator(Tool):
    name = "calculator"
    description = "Evaluate an arithmetic expression, e.g. (4+5)*2 or 1250/4. " \
                  "Only numbers, + - * / // % ** and parentheses."
    parameters = {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "The arithmetic to compute, e.g. 12*3+4",
                                      # the shape constrained decoding holds a small model to (agent.format.
                                      # constrain); an extension keyword, so a call is not refused for it
                                      "x-action-pattern": r"[0-9][0-9+\-*/(). ]*"}},
        "required": ["expression"],
    }

    def run(self, expression: str) -> str:
        return show(evaluate(expression))


def evaluate(expression: str) -> Fraction:
    """The exact value of `expression`; ValueError with a sentence for the agent when it is refused."""
    text = expression.strip()
    for pattern, replacement in LENIENT:
        text = pattern.sub(replacement, text).strip()
    if not text:
        raise ValueError(f"the expression is empty: {ACCEPTS}")
    if len(text) > MAX_CHARS:
        raise ValueError(f"the expression is longer than {MAX_CHARS} characters: compute it in smaller steps")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(f"could not read {expression.strip()!r} as arithmetic: {ACCEPTS}") from None
    return value_of(tree.body, text)


def value_of(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        return number(node.value, ast.get_source_segment(source, node))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](value_of(node.operand, source))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = value_of(node.left, source), value_of(node.right, source)
        if isinstance(node.op, ast.Pow):
            return checked(power(left, right))
        if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise ValueError("division by zero")
        return checked(BINARY[type(node.op)](left, right))
    what = REFUSED.get(type(node), f"'{type(node).__name__}' expressions")
    raise ValueError(f"{what} are not allowed: {ACCEPTS}")


def number(value: object, literal: str | None) -> Fraction:
    # bool is an int subclass: True+1 is not arithmetic a model means
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number: {ACCEPTS}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"the number is too large (over 10**{MAX_DIGITS})")
    if isinstance(value, int):
        return checked(Fraction(value))
    try:  # a float literal is the decimal the model wrote (0.1 is 1/10), not its binary approximation
        return checked(Fraction(literal or repr(value)))
    except ValueError:  # a spelling Fraction does not read (1_000.5): the float's shortest repr
        return checked(Fraction(repr(value)))


def power(base: Fraction, exponent: Fraction) -> Fraction:
    """base ** exponent, refused before computing when the result would be too big to be arithmetic."""
    if base == 0:
        if exponent < 0:
            raise ValueError("division by zero")
        return Fraction(int(exponent == 0))
    size = max(abs(base.numerator), base.denominator)
    if abs(exponent) * math.log10(size) > MAX_PARTS:  # digits the result would have
        raise ValueError(f"the power is too large (over 10**{MAX_DIGITS})")
    if exponent.denominator == 1:
        return base ** int(exponent)  # exact
    if base < 0:
        raise ValueError("a fractional power of a negative number is not a real number")
    return Fraction(float(base) ** float(exponent))


def checked(value: Fraction) -> Fraction:
    if abs(value) > 10**MAX_DIGITS:
        raise ValueError(f"the result is too large (over 10**{MAX_DIGITS})")
    if value.denominator > 10**MAX_PARTS:
        raise ValueError("the result is too small to show")
    return value


def show(value: Fraction) -> str:
    """Integers as integers (7, not 7.0); others rounded to DECIMALS places, trailing zeros dropped."""
    rounded = round(value, DECIMALS)
    if rounded.denominator == 1:
        if rounded == 0 and value != 0:  # tiny but not zero: significant digits, not 0
            return f"{float(value):.{DECIMALS}g}"
        return str(rounded.numerator)
    with localcontext() as context:
        context.prec = MAX_DIGITS + DECIMALS + 10  # exact: the denominator divides 10**DECIMALS
        text = format(Decimal(rounded.numerator) / Decimal(rounded.denominator), "f")
    return text.rstrip("0").rstrip(".")
