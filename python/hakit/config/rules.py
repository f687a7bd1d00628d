"""The failover rule language of <failover>.

    label: if (expression) then action();

An expression compares resources with values (`heartbeat.* == down`,
`tcp.web != up`), combined with &&, || and !, grouped with parentheses.  A `?`
or `*` in a resource name stands for any checker of that class (`ip.?`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTIONS = ("restart", "stopstart", "wait", "stop", "swap", "prim")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<op>==|!=|&&|\|\||[():;!])
  | (?P<word>[A-Za-z0-9_.?*\-]+)
    """,
    re.VERBOSE,
)


class RuleSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Cmp:
    resource: str
    op: str  # == or !=
    value: str


@dataclass(frozen=True)
class Not:
    expr: Expr


@dataclass(frozen=True)
class BoolOp:
    op: str  # && or ||
    left: Expr
    right: Expr


Expr = Cmp | Not | BoolOp


@dataclass(frozen=True)
class Rule:
    label: str
    expr: Expr
    action: str
    line: int  # 1-based, within the rule text


def _tokens(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise RuleSyntaxError(line, f"unexpected character {text[pos]!r}")
        if m.lastgroup != "ws":
            out.append((m.group(0), line))
        line += m.group(0).count("\n")
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def line(self) -> int:
        if self.i < len(self.toks):
            return self.toks[self.i][1]
        return self.toks[-1][1] if self.toks else 1

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise RuleSyntaxError(self.line(), f"rule ends early (expected {expected or 'more'})")
        if expected is not None and tok != expected:
            raise RuleSyntaxError(self.line(), f"expected '{expected}', found '{tok}'")
        self.i += 1
        return tok

    def word(self, what: str) -> str:
        line = self.line()  # of this token: after take() it would be the next one's
        tok = self.take()
        if not re.fullmatch(r"[A-Za-z0-9_.?*\-]+", tok):
            raise RuleSyntaxError(line, f"expected {what}, found '{tok}'")
        return tok

    def rules(self) -> list[Rule]:
        out: list[Rule] = []
        while self.peek() is not None:
            line = self.line()
            label = self.word("a rule label")
            self.take(":")
            if self.take() != "if":
                raise RuleSyntaxError(line, f"rule '{label}' must read 'if (...) then action();'")
            self.take("(")
            expr = self.expr()
            self.take(")")
            self.take("then")
            action_line = self.line()
            action = self.word("an action")
            if action not in ACTIONS:
                raise RuleSyntaxError(action_line, f"unknown action '{action}' (use {', '.join(ACTIONS)})")
            self.take("(")
            self.take(")")
            self.take(";")
            out.append(Rule(label, expr, action, line))
        labels = [r.label for r in out]
        for dup in sorted({lb for lb in labels if labels.count(lb) > 1}):
            line = [r.line for r in out if r.label == dup][1]  # the repeat is the mistake
            raise RuleSyntaxError(line, f"rule label '{dup}' is used twice")
        return out

    def expr(self) -> Expr:
        left = self.conj()
        while self.peek() == "||":
            self.take()
            left = BoolOp("||", left, self.conj())
        return left

    def conj(self) -> Expr:
        left = self.unary()
        while self.peek() == "&&":
            self.take()
            left = BoolOp("&&", left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.peek() == "!":
            self.take()
            return Not(self.unary())
        if self.peek() == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        resource = self.word("a resource name")
        op_line = self.line()
        op = self.take()
        if op not in ("==", "!="):
            raise RuleSyntaxError(op_line, f"expected == or != after '{resource}'")
        return Cmp(resource, op, self.word("a value"))


def parse_rules(text: str) -> list[Rule]:
    return _Parser(text).rules()
