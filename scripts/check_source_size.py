#!/usr/bin/python3
"""Reports the C++ source files that exceed a line limit and the functions that exceed another.

    scripts/check_source_size.py [--max-file-lines 400] [--max-function-lines 80] [DIR_OR_FILE ...]

Default: every .cpp, .hpp, .h, .cc and .inc file below tools/ (the memoryformer tool's rooms), with
the limits of issue 40: 400 lines a file, 80 lines a function. Prints one line per excess,
FILE: N lines or FILE:LINE: FUNCTION: N lines, and exits 1 if there is any, 0 otherwise (with a
summary line), 2 if a file cannot be read or its braces do not balance.

A function is found, heuristically, at the "{" that opens its body: at namespace or class scope,
after a head (the text since the previous ";", "{" or "}") that holds a parameter list "(" and is
not a class, struct, union, enum or namespace head nor an initializer ("= {"). Its length runs from
the first line of that head (a template line included, comments before it excluded) to the line of
the matching "}". Comments, string and character literals (raw ones included) and preprocessor
lines are blanked first; lambdas, nested blocks and local classes count as part of the function
that holds them. Both branches of an #if are scanned, so each must balance its braces, as they do
in this code base. Standard library only (Debian's /usr/bin/python3).
"""

import argparse
import bisect
import os
import re
import sys

EXTENSIONS = (".cpp", ".hpp", ".h", ".cc", ".inc")
ACCESS = re.compile(r"^\s*(?:(?:public|private|protected)\s*:(?!:)\s*)*")
CLASS_HEAD = re.compile(r"^(?:class|struct|union|enum)\b")
CLASS_NAME = re.compile(r"^(?:class|struct|union)\s+(?:alignas\s*\([^)]*\)\s*)?(\w+)")


def blank_comments_and_literals(text):
    """The text with comments, literals and preprocessor lines replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)
    line_start = True  # only white space since the last newline: a "#" opens a directive
    while i < n:
        c = text[i]
        if c == "\n":
            out.append(c)
            line_start = True
            i += 1
            continue
        if line_start and c == "#":  # a directive, with its "\"-continued lines
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out.append(" \n")
                    i += 2
                    continue
                out.append(" ")
                i += 1
            continue
        if not c.isspace():
            line_start = False
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == "R" and text.startswith('"', i + 1) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^()\\ ]{0,16})\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            close = ")" + m.group(1) + '"'
            end = text.find(close, i + m.end())
            end = n if end < 0 else end + len(close)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c in "\"'":
            if c == "'" and i > 0 and text[i - 1].isalnum():  # a digit separator: 1'000'000
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_template(head):
    """The head without a leading "template <...>" (angle brackets balanced)."""
    while True:
        m = re.match(r"\s*template\s*<", head)
        if not m:
            return head
        depth, i = 1, m.end()
        while i < len(head) and depth:
            depth += {"<": 1, ">": -1}.get(head[i], 0)
            i += 1
        head = head[i:]


def top_level_equals(head):
    """Whether the head has an "=" outside parentheses and angle brackets (an initializer)."""
    depth = 0
    for k, ch in enumerate(head):
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        elif ch == "=" and depth == 0:
            before, after = head[k - 1 : k], head[k + 1 : k + 2]
            if before not in "=!<>" and after != "=" and not re.search(r"operator\s*$", head[:k]):
                return True
    return False


def function_name(head):
    m = re.search(r"(operator\s*\(\s*\)|operator\s*[^\s(]+|~?[A-Za-z_]\w*)\s*\(", head)
    return re.sub(r"\s+", "", m.group(1)) if m else "?"


def classify(head, enclosing):
    """The kind of scope a "{" after `head` opens inside `enclosing`, and its name."""
    if enclosing in ("function", "block", "init"):
        return ("block" if enclosing != "init" else "init"), ""
    body = strip_template(head).strip()
    if re.match(r"^(?:inline\s+)?namespace\b", body) or re.match(r'^extern\s*$', body):
        return "namespace", ""
    if CLASS_HEAD.match(body) and "(" not in body.split(":")[0]:
        m = CLASS_NAME.match(body)
        return "class", m.group(1) if m else ""
    if top_level_equals(body) or "(" not in body:
        return "init", ""
    return "function", function_name(body)


def scan(path, text):
    """The functions of `text` as (line, qualified name, lines), or raises ValueError."""
    code = blank_comments_and_literals(text)
    line_starts = [0] + [m.end() for m in re.finditer(r"\n", code)]

    def line_of(offset):
        return bisect.bisect_right(line_starts, offset)

    stack = []  # (kind, name, first line)
    functions = []
    head_start = 0
    for i, ch in enumerate(code):
        if ch in ";}":
            if ch == "}":
                if not stack:
                    raise ValueError(f"{path}:{line_of(i)}: a '}}' closes nothing")
                kind, name, first = stack.pop()
                if kind == "function":
                    functions.append((first, name, line_of(i) - first + 1))
            head_start = i + 1
        elif ch == "{":
            head = code[head_start:i]
            enclosing = stack[-1][0] if stack else "namespace"
            kind, name = classify(head, enclosing)
            skip = ACCESS.match(head).end()
            rest = head[skip:]
            first = line_of(head_start + skip + (len(rest) - len(rest.lstrip()))) if rest.strip() else line_of(i)
            if kind == "function":
                owners = [n for k, n, _ in stack if k == "class" and n]
                name = "::".join(owners + [name])
            stack.append((kind, name, first))
            head_start = i + 1
    if stack:
        raise ValueError(f"{path}:{stack[-1][2]}: a '{{' is never closed")
    return functions


def sources(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for root, dirs, files in os.walk(p):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(EXTENSIONS):
                    yield os.path.join(root, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-file-lines", type=int, default=400)
    parser.add_argument("--max-function-lines", type=int, default=80)
    parser.add_argument("paths", nargs="*", help="files or folders (default: tools/ of this repository)")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = args.paths or [os.path.relpath(os.path.join(root, "tools"))]

    excesses, files, functions = [], 0, 0
    longest_file, longest_function = ("", 0), ("", 0)
    for path in sources(paths):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            found = scan(path, text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            print(f"check_source_size: {e}", file=sys.stderr)
            return 2
        files += 1
        lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        longest_file = max(longest_file, (path, lines), key=lambda x: x[1])
        if lines > args.max_file_lines:
            excesses.append(f"{path}: {lines} lines (limit {args.max_file_lines})")
        for first, name, length in found:
            functions += 1
            longest_function = max(longest_function, (f"{path}:{first}: {name}", length), key=lambda x: x[1])
            if length > args.max_function_lines:
                excesses.append(f"{path}:{first}: {name}: {length} lines (limit {args.max_function_lines})")
    for e in excesses:
        print(e)
    summary = (f"{files} files, {functions} functions; longest file {longest_file[0]} ({longest_file[1]} lines), "
               f"longest function {longest_function[0]} ({longest_function[1]} lines)")
    if excesses:
        print(f"check_source_size: {len(excesses)} over the limits ({summary})")
        return 1
    print(f"check_source_size: ok, {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
