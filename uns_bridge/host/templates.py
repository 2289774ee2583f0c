"""Sparkplug template definitions (from NBIRTH) and the expansion of instances into member metrics.

A definition is a Template metric of an NBIRTH with ``is_definition`` set; its name is how instances
refer to it (``template_ref``). Some senders name definitions ``_types_/Motor`` and refer to them as
``Motor`` (or the reverse): both spellings resolve. Instances become one metric per member, named
``<instance>/<member>``; nested instances expand recursively (depth-bounded).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import Metric, Template, TemplateParameter

TYPES_PREFIX = "_types_/"
MAX_DEPTH = 16


def _canonical(name: str) -> str:
    return name[len(TYPES_PREFIX) :] if name.startswith(TYPES_PREFIX) else name


@dataclass
class TemplateCatalog:
    """The template definitions of one edge node's birth session."""

    definitions: dict[str, Template] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Iterable[Metric]) -> TemplateCatalog:
        catalog = cls()
        for metric in metrics:
            if (
                metric.name is not None
                and metric.datatype == DataType.Template
                and isinstance(metric.value, Template)
                and metric.value.is_definition
            ):
                catalog.definitions[_canonical(metric.name)] = metric.value
        return catalog

    def add(self, name: str, definition: Template) -> None:
        self.definitions[_canonical(name)] = definition

    def find(self, ref: str | None) -> Template | None:
        if ref is None:
            return None
        return self.definitions.get(_canonical(ref))

    def parameters_of(self, instance: Template) -> tuple[TemplateParameter, ...]:
        """The instance's parameters, with the definition's defaults for those it leaves out."""
        definition = self.find(instance.template_ref)
        given = {p.name: p for p in instance.parameters}
        merged = []
        if definition is not None:
            for default in definition.parameters:
                merged.append(given.pop(default.name, default))
        merged.extend(given.values())
        return tuple(merged)


def expand_instance(
    name: str, instance: Template, catalog: TemplateCatalog, *, require_complete: bool = True, _depth: int = 0
) -> tuple[list[tuple[str, Metric]], list[str]]:
    """The leaf member metrics of a template instance as ``(path, metric)``, and any problems found.

    With ``require_complete`` (births) members the instance leaves out are taken from the definition,
    with the definition's values. A member without a datatype takes the definition's.
    """
    problems: list[str] = []
    if _depth > MAX_DEPTH:
        return [], [f"template {name!r} nests deeper than {MAX_DEPTH} levels"]
    definition = catalog.find(instance.template_ref)
    if definition is None and instance.template_ref is not None and catalog.definitions:
        problems.append(f"template instance {name!r} refers to unknown definition {instance.template_ref!r}")
    defined = {m.name: m for m in definition.metrics if m.name is not None} if definition is not None else {}
    members: list[Metric] = list(instance.metrics)
    if require_complete and defined:
        present = {m.name for m in members}
        members.extend(m for n, m in defined.items() if n not in present)
    out: list[tuple[str, Metric]] = []
    for member in members:
        if member.name is None:
            problems.append(f"a member of template {name!r} has no name")
            continue
        if member.datatype is None and member.name in defined:
            member = member._replace(datatype=defined[member.name].datatype)
        path = f"{name}/{member.name}"
        if member.datatype == DataType.Template and isinstance(member.value, Template):
            nested, nested_problems = expand_instance(
                path, member.value, catalog, require_complete=require_complete, _depth=_depth + 1
            )
            out.extend(nested)
            problems.extend(nested_problems)
            continue
        out.append((path, member))
    return out, problems
