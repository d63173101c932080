"""Where a Python completion's block ends (stopping.BlockScope), checked against Python's own parser on the
standard library, and on hand-written cases: strings, brackets, comments, tabs, continuation keywords, and
text that stops midway (a diffusion answer's committed prefix grows a few tokens at a time)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json.decoder
import textwrap

import pytest

from unmask.sampling.stopping import BlockScope, StopScan, python_lines
from unmask.sampling.streaming import FinalText


def _blocks(source: str):
    """(header end offset, body end offset, parses_alone) for every def/class whose body starts on a later line."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.body[0].lineno == node.lineno or isinstance(node.body[0], ast.Expr) and \
                node.body[0].lineno == node.body[0].end_lineno == node.lineno:
            continue
        # The header ends before the body's first line (a decorator's, if it has one) and the comments above it.
        first = body_start = node.body[0].lineno
        first = min([body_start] + [d.lineno for d in getattr(node.body[0], "decorator_list", [])])
        while lines[first - 2].strip() == "" or lines[first - 2].lstrip().startswith("#"):
            first -= 1
        header_end = offsets[first - 1]
        chain, p = [], parents.get(node)
        while p is not None:
            chain.append(p)
            p = parents.get(p)
        alone = all(isinstance(a, (ast.Module, ast.ClassDef)) for a in chain)
        yield header_end, offsets[node.end_lineno], alone


@pytest.mark.parametrize("module", [textwrap, json.decoder, dataclasses, functools])
def test_the_block_ends_where_pythons_parser_ends_the_definition(module):
    source = inspect.getsource(module)
    checked = 0
    for header_end, body_end, alone in _blocks(source):
        prompt, rest = source[:header_end], source[header_end:]
        scope = BlockScope.of_prompt(prompt)
        assert scope is not None and scope.needs_body
        cut = scope.end(rest)
        body = source[header_end:body_end].rstrip()
        if cut is None:  # the definition runs to the end of the file (then comments at most)
            assert all(not line.strip() or line.lstrip().startswith("#") for line in source[body_end:].splitlines())
            continue
        answer = rest[:cut]
        assert answer.startswith(body)
        assert all(not line.strip() or line.lstrip().startswith("#") for line in answer[len(body):].splitlines())
        if alone:
            ast.parse(prompt + answer)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("prompt, answer, expected", [
    ("def fibonacci(n):", "\n    return f\n\n\ndef fibonacci(n):\n    return", "\n    return f"),
    ("def f(x):\n", "    return x\n# a comment at column 0\n    # and one deeper\nclass A:",
     "    return x\n# a comment at column 0\n    # and one deeper"),
    ("def f():", '\n    s = """\nnot code\n"""\n    return s\nx = 1', '\n    s = """\nnot code\n"""\n    return s'),
    ("def f():", "\n    t = (1,\n2,\n)\n    return t\n@decorator", "\n    t = (1,\n2,\n)\n    return t"),
    ("def f():", "\n    u = 1 + \\\n2\n    return u\nprint(f())", "\n    u = 1 + \\\n2\n    return u"),
    ("def f():", "\n    v = '#('  # )\n    return v\nz", "\n    v = '#('  # )\n    return v"),
    ("if x:", "\n    a()\nelse:\n    b()\nc()", "\n    a()\nelse:\n    b()"),
    ("try:", "\n    a()\nexcept ValueError:\n    b()\nfinally:\n    c()\nelse_ = 1",
     "\n    a()\nexcept ValueError:\n    b()\nfinally:\n    c()"),
    ("class A:\n    def f(self):  # a method", "\n        return 1\n\n    def g(self):", "\n        return 1"),
    ("def f():\n\tif x:", "\n\t\treturn 1\n\treturn 2", "\n\t\treturn 1"),
    # Inside a block already: the block ends at the first line indented less than the prompt's last line.
    ('def f(x):\n    """Doc.\n\n    >>> f(1)\n    """\n', "    return x\n\n\ndef check(candidate):", "    return x"),
    ("def f(x):\n    y = x\n", "    return y\nz = 1", "    return y"),
])
def test_hand_written_cases(prompt, answer, expected):
    scope = BlockScope.of_prompt(prompt)
    cut = scope.end(answer)
    assert cut is not None and answer[:cut] == expected


@pytest.mark.parametrize("answer", [
    "\n    return f\n\n",  # the next line has not begun
    "\n    if n:\n        a\n    el",  # deeper lines only
    "\n    x = 1\nel",  # 'el' may still become 'elif'
    "\n    x = 1\nelse",  # ... and 'else' 'elsewhere'
    '\n    s = """\nstill in the string',
    "\n    t = (1,\n2",
    "\ndef g",  # no body yet: a header alone would not parse
])
def test_an_open_block_has_no_end_yet(answer):
    assert BlockScope.of_prompt("def f():").end(answer) is None


def test_prompts_at_top_level_have_no_block():
    for prompt in ("import os\n", "x = 1", "print(", "# just a comment\n", ""):
        assert BlockScope.of_prompt(prompt) is None
    # a prompt that ends inside a string or bracket, indented: the enclosing block still bounds the answer
    scope = BlockScope.of_prompt("def f():\n    return g(1,")
    assert scope is not None and scope.end(" 2)\nx = 1") == len(" 2)")


def test_every_prefix_of_an_answer_agrees_with_the_whole():
    """A committed prefix never shows an end that the whole answer would put elsewhere."""
    scope = BlockScope.of_prompt("def f(x):")
    answer = "\n    if x:\n        return (1,\n2)\n    else:\n        s = '''\ny\n'''\n\n\nelsewhere = f\n"
    whole = scope.end(answer)
    assert answer[:whole] == "\n    if x:\n        return (1,\n2)\n    else:\n        s = '''\ny\n'''"
    for k in range(len(answer)):
        cut = scope.end(answer[:k])
        assert cut is None or cut == whole


def test_stop_scan_takes_the_earlier_of_a_stop_string_and_the_block_end():
    scope = BlockScope.of_prompt("def f():")
    assert StopScan(("return",), scope).scan("\n    return 1\nx") == len("\n    ")
    assert StopScan(("zzz",), scope).scan("\n    return 1\nx") == len("\n    return 1")
    assert StopScan((), None).scan("anything") is None


def test_python_lines_reads_indentation_and_last_characters():
    lines, complete = python_lines("if a:  # c\n\tb = [1,\n  2]\n\n# x\n    c\n")
    assert [(ln.indent, ln.head, ln.last) for ln in lines] == [(0, "if a:  # c", ":"), (8, "b = [1,", "]"),
                                                              (4, "c", "c")]
    assert complete
    assert python_lines("x = '''open")[1] is False and python_lines("x = (1,")[1] is False


def test_final_text_holds_back_trailing_white_space_when_the_block_may_end():
    final = FinalText((), hold_space=True)
    assert final.update("\n    return f\n") == "\n    return f"
    assert final.update("\n    return f\n\n\n") == ""
    assert final.update("\n    return f", final=True) == ""
    other = FinalText((), hold_space=True)
    other.update("\n    a\n")
    assert other.update("\n    a\n    b") == "\n    b"
