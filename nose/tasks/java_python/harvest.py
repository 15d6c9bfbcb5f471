"""Pull standalone Java methods out of a source tree or a ``src.zip`` / ``.jar`` of sources.

A method is kept when it is ``static``, has a body of ``min_lines`` to ``max_lines`` lines (after
comments are dropped), and is *standalone*: everything it names is one of its parameters, its
locals (variables, loop and lambda parameters, caught exceptions), its own type parameters, a
JDK type from :data:`JDK_TYPES`, a member reached through ``.``, or itself (recursion). So a
method that reads a field, calls a sibling method, uses ``this`` or a project type is skipped.
The check is lexical (no compiler), so it errs on the side of skipping. Overloads keep their
first occurrence, one record per name. Output records carry the file they came from in
``origin``; their licence is the source tree's.

Example: the JDK's own sources (Debian package ``openjdk-17-source``)::

    nose data harvest /usr/lib/jvm/openjdk-17/lib/src.zip --out runs/jdk-methods.jsonl
"""

from __future__ import annotations

import re
import textwrap
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nose.tasks.java_python.corpus import JavaMethod
from nose.errors import NoseError

JDK_TYPES = frozenset("""
String StringBuilder StringBuffer CharSequence Math StrictMath Integer Long Short Byte Double Float Character
Boolean Number Object Objects System Comparable Iterable Void
List ArrayList LinkedList Map HashMap TreeMap LinkedHashMap Set HashSet TreeSet LinkedHashSet Deque ArrayDeque
Queue PriorityQueue Stack Vector Arrays Collections Collection Iterator ListIterator Comparator Optional
OptionalInt OptionalLong OptionalDouble BitSet StringJoiner SortedMap SortedSet NavigableMap NavigableSet
Stream IntStream LongStream DoubleStream Collectors
Function BiFunction Predicate BiPredicate Supplier Consumer BiConsumer UnaryOperator BinaryOperator
IntPredicate IntFunction IntUnaryOperator IntBinaryOperator ToIntFunction
BigInteger BigDecimal RoundingMode
Exception RuntimeException IllegalArgumentException IllegalStateException ArithmeticException
NullPointerException IndexOutOfBoundsException ArrayIndexOutOfBoundsException StringIndexOutOfBoundsException
NumberFormatException UnsupportedOperationException NoSuchElementException ClassCastException
""".split())

_KEYWORDS = frozenset("""
abstract assert boolean break byte case catch char class continue default do double else enum extends final
finally float for if implements import instanceof int interface long native new package private protected
public return short static strictfp super switch synchronized this throw throws transient try void volatile
while var yield record true false null
""".split())

_HEADER = re.compile(
    r"^[ \t]*((?:(?:public|private|protected|static|final|synchronized|strictfp)\s+)+)"
    r"(<[^>{};()]*(?:<[^>{};()]*>[^>{};()]*)*>\s+)?"  # type parameters
    r"([\w.$]+(?:\s*<[^{};()]*?>)?(?:\s*\[\s*\])*)\s+"  # return type
    r"(\w+)\s*\(([^()]*)\)\s*(?:throws\s+[\w.,\s]+?)?\s*\{", re.M)
_DECLARED = re.compile(
    r"(?:\b(?:int|long|short|byte|char|boolean|float|double|var|final)\b|\b[A-Z][\w$]*(?:\s*<[^;{}()=]*?>)?)"
    r"(?:\s*\[\s*\])*\s+([a-z_$][\w$]*)\s*(?=[=;,:)\[])")
_LAMBDA_ONE = re.compile(r"\b([a-z_$][\w$]*)\s*->")
_LAMBDA_MANY = re.compile(r"\(([^()]*)\)\s*->")
_CALL = re.compile(r"(?<![\w.$])([a-z_$][\w$]*)\s*\(")
_NAME = re.compile(r"(?<![\w.$@'\"])([A-Za-z_$][\w$]*)")


def mask(text: str, keep_strings: bool) -> str:
    """``text`` with comments (and, unless ``keep_strings``, string and char literals) blanked
    out character for character, so offsets still match and braces in them do not count."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        two = text[i:i + 2]
        if two == "//" or two == "/*":
            end = text.find("\n", i) if two == "//" else text.find("*/", i + 2) + 2
            end = n if end <= 1 or end == -1 else end
            for k in range(i, end):
                if out[k] != "\n":
                    out[k] = " "
            i = end
        elif text[i] in "\"'":
            quote, k = text[i], i + 1
            if text.startswith('"""', i):  # text block
                end = text.find('"""', i + 3)
                k = n if end == -1 else end + 3
            else:
                while k < n and text[k] != quote and text[k] != "\n":
                    k += 2 if text[k] == "\\" else 1
                k = min(k + 1, n)
            if not keep_strings:
                for j in range(i + 1, k - 1):
                    if out[j] != "\n":
                        out[j] = " "
            i = k
        else:
            i += 1
    return "".join(out)


def _matching_brace(skeleton: str, open_at: int) -> int:
    depth = 0
    for k in range(open_at, len(skeleton)):
        if skeleton[k] == "{":
            depth += 1
        elif skeleton[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return -1


def _declared_names(skeleton: str, params: str) -> set[str]:
    names = set(_DECLARED.findall(skeleton)) | set(_LAMBDA_ONE.findall(skeleton))
    for group in _LAMBDA_MANY.findall(skeleton):
        names.update(p.split()[-1] for p in group.split(",") if p.split())
    names.update(p.split()[-1].lstrip(".") for p in params.split(",") if p.split())
    return names


def why_not_standalone(name: str, type_params: str, params: str, skeleton: str) -> str | None:
    """None when the method names only what it may (see module docstring), else the reason.

    ``skeleton``: the whole method, header included, with comments and literals blanked out.
    """
    if re.search(r"\b(this|super)\b", skeleton):
        return "uses this/super"
    declared = _declared_names(skeleton, params)
    own_types = set(re.findall(r"\b([A-Z]\w*)\b", type_params or ""))
    for call in _CALL.findall(skeleton):
        if call not in _KEYWORDS and call != name:  # Java cannot call a local: this is a sibling method
            return f"calls {call}()"
    for word in _NAME.findall(skeleton):
        if word in _KEYWORDS or word == name or word in declared or word in own_types:
            continue
        if word[0].isupper():
            if word not in JDK_TYPES:
                return f"names {word}"
        else:
            return f"reads {word}"
    return None


def _tidy(code: str) -> str:
    lines = [line.rstrip() for line in textwrap.dedent(code).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


def methods_in(text: str, origin: str = "") -> Iterator[tuple[JavaMethod | None, str]]:
    """(method, "") for every standalone static method of one source file, (None, reason) for the others."""
    skeleton = mask(text, keep_strings=False)
    readable = mask(text, keep_strings=True)
    for m in _HEADER.finditer(skeleton):
        modifiers, type_params, _, name, params = m.groups()
        if "static" not in modifiers.split():
            continue
        end = _matching_brace(skeleton, m.end() - 1)
        if end < 0:
            yield None, "unbalanced braces"
            continue
        why = why_not_standalone(name, type_params or "", params, skeleton[m.start():end + 1])
        if why:
            yield None, why
            continue
        code = _tidy(readable[m.start():end + 1])
        head = re.sub(r"^((?:(?:public|private|protected|static|final|synchronized|strictfp)\s+)+)",
                      "public static ", code, count=1)
        yield JavaMethod(name, head, "harvested", origin), ""


def _java_files(source: Path) -> Iterator[tuple[str, str]]:
    """(path inside the source, text) of every ``.java`` file in a folder or a zip/jar."""
    if source.is_dir():
        for path in sorted(source.rglob("*.java")):
            try:
                yield str(path.relative_to(source)), path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for member in sorted(zf.namelist()):
                if member.endswith(".java"):
                    yield member, zf.read(member).decode("utf-8", errors="replace")
    elif source.suffix == ".java":
        yield source.name, source.read_text(encoding="utf-8", errors="replace")
    else:
        raise NoseError(f"{source} is neither a folder, a .java file nor a zip/jar of sources")


@dataclass
class HarvestStats:
    files: int = 0
    static_methods: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def harvest(source: str | Path, min_lines: int = 3, max_lines: int = 40, limit: int | None = None,
            progress=None) -> tuple[list[JavaMethod], HarvestStats]:
    """Standalone static methods of ``source`` (folder, ``.java``, or zip/jar), one per name."""
    source = Path(source).expanduser()
    if not source.exists():
        raise NoseError(f"Java source {source} does not exist; pass a folder, a .java file or a src.zip")
    if not 1 <= min_lines <= max_lines:
        raise NoseError(f"need 1 <= --min-lines <= --max-lines (got {min_lines}, {max_lines})")
    stats = HarvestStats()
    kept: dict[str, JavaMethod] = {}
    for origin, text in _java_files(source):
        stats.files += 1
        if progress:
            progress(stats)
        for method, why in methods_in(text, origin):
            stats.static_methods += 1
            if method is None:
                stats.skipped[why.split()[0]] += 1
            elif not min_lines <= len(method.java.splitlines()) <= max_lines:
                stats.skipped["size"] += 1
            elif method.name in kept:
                stats.skipped["overload"] += 1
            else:
                kept[method.name] = method
        if limit is not None and len(kept) >= limit:
            break
    methods = list(kept.values())[:limit]
    stats.kept = len(methods)
    return methods, stats
