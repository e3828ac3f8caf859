"""Strict YAML reading: safe types only, duplicate keys refused, every key's line remembered."""

from __future__ import annotations

import yaml

from anklume.problems import KeyPath, Problem, ValidationError

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Deeper keys are never reported by path, so their lines are not worth recording.
_MAX_LINE_DEPTH = 12


class _DuplicateKey(Exception):
    def __init__(self, key: object, first: int, line: int) -> None:
        self.key, self.first, self.line = key, first, line


def parse(text: str, filename: str) -> tuple[object, dict[KeyPath, int]]:
    """Parse one YAML document; return its data and the line (1-based) of every key path.

    Raises ValidationError naming the file and line for anything that is not valid YAML,
    including a key given twice in one mapping (the last would silently win, hiding e.g. a
    machine defined twice).
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        if node is None:
            return None, lines
        # Walk the node tree before constructing: merge keys (`<<`) are still apart there,
        # so only keys the user wrote twice count as duplicates.
        _walk(loader, node, (), lines, set())
        return loader.construct_document(node), lines
    except _DuplicateKey as e:
        raise ValidationError([Problem(
            "", f"key {e.key!r} given twice in one mapping (first on line {e.first})",
            "remove or rename one of them", filename, e.line)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(x for x in (e.context, e.problem) if x) or "syntax error"
        raise ValidationError([Problem("", f"invalid YAML: {what}", None, filename,
                                       mark.line + 1 if mark else None)]) from None
    except RecursionError:
        raise ValidationError([Problem("", "invalid YAML: nested too deeply", None,
                                       filename)]) from None
    # PyYAML lets some plain errors through (ValueError for `2020-02-30`, a date that does
    # not exist); arbitrary input must still end in a ValidationError.
    except Exception as e:
        raise ValidationError([Problem("", f"invalid YAML: {e}", None, filename)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath,
          lines: dict[KeyPath, int], seen: set[int]) -> None:
    # Aliases share node objects: visiting each once keeps `&a [*a]` and billion-laughs
    # documents from looping or exploding.
    if id(node) in seen:
        return
    seen.add(id(node))
    deep = len(path) < _MAX_LINE_DEPTH
    if isinstance(node, yaml.MappingNode):
        firsts: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in firsts:
                raise _DuplicateKey(key, firsts[key], line)
            firsts[key] = line
            if deep:
                sub = (*path, key if isinstance(key, str | int) else str(key))
                lines.setdefault(sub, line)
                _walk(loader, value_node, sub, lines, seen)
            else:
                _walk(loader, value_node, path, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if deep:
                lines.setdefault((*path, i), item.start_mark.line + 1)
            _walk(loader, item, (*path, i) if deep else path, lines, seen)
