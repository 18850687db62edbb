"""Executes a Python launch file's generate_launch_description() under the
launch API contract that ROS 2 Humble, Jazzy and Kilted all honour.

The real `launch` / `launch_ros` packages are not on the registries this
project installs from (see shared ENVIRONMENT notes), so this module provides
the subset of their API that voice_agent's launch files use, with the
*strictest* behaviour among those releases:

- a "substitution list" (SomeSubstitutionsType) is a str, a Substitution, or a
  flat iterable of str / Substitution; anything else (a nested list) raises
  the TypeError Jazzy's launch 3.4 raises ("Failed to normalize given item of
  type '<class 'list'>' ..."), at construction time as there;
- PathJoinSubstitution joins one path component per item of that flat list;
- Node parameter values coming from substitutions are YAML-parsed, as
  launch_ros does, unless wrapped in ParameterValue(value_type=str);
- IfCondition accepts only "true"/"false"/"1"/"0" (any case) and raises on
  anything else, as launch does;
- a launch argument's default may be substitutions, including another
  argument declared before it (resolved when the launch runs).

A launch file that builds here only uses API all three releases accept, and
`describe()` resolves what it would start (executables, names, namespaces,
parameter files, parameter values, remappings) for given launch arguments.
Anything a launch file imports beyond this subset fails with ImportError,
so the test notices when the file starts using more API than is checked.
"""
from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field

import yaml


class Substitution:
    def perform(self, context: dict) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class TextSubstitution(Substitution):
    def __init__(self, *, text: str):
        self.text = text

    def perform(self, context):
        return self.text


def normalize_to_list_of_substitutions(subs) -> list[Substitution]:
    def one(x):
        if isinstance(x, Substitution):
            return x
        if isinstance(x, str):
            return TextSubstitution(text=x)
        raise TypeError(f"Failed to normalize given item of type '{type(x)}', when only "
                        "'str' or 'launch.Substitution' were expected.")

    if isinstance(subs, str):
        return [TextSubstitution(text=subs)]
    if isinstance(subs, Substitution):
        return [subs]
    return [one(y) for y in subs]


def perform(subs, context) -> str:
    return "".join(s.perform(context) for s in normalize_to_list_of_substitutions(subs))


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name, *, default=None):
        self.name = perform(variable_name, {})
        self.default = default

    def perform(self, context):
        if self.name in context:
            return context[self.name]
        if self.default is not None:
            return perform(self.default, context)
        raise KeyError(f"launch configuration {self.name!r} is not set")


class PathJoinSubstitution(Substitution):
    def __init__(self, substitutions):
        self.parts = normalize_to_list_of_substitutions(substitutions)

    def perform(self, context):
        return os.path.join(*[p.perform(context) for p in self.parts])


@dataclass
class DeclareLaunchArgument:
    name: str
    default_value: object = None
    description: str = ""

    def __post_init__(self):
        if self.default_value is not None:
            normalize_to_list_of_substitutions(self.default_value)


class IfCondition:
    def __init__(self, predicate_expression):
        self.expr = normalize_to_list_of_substitutions(predicate_expression)

    def evaluate(self, context) -> bool:
        v = perform(self.expr, context).strip().lower()
        if v in ("true", "1"):
            return True
        if v in ("false", "0"):
            return False
        raise ValueError(f"Unexpected value for IfCondition: expected 'true' or 'false', got {v!r}")


class LaunchDescription:
    def __init__(self, entities=None):
        self.entities = list(entities or [])

    def add_action(self, action):
        self.entities.append(action)


class ParameterFile:
    def __init__(self, param_file, *, allow_substs=False):
        self.path = normalize_to_list_of_substitutions(param_file)
        self.allow_substs = allow_substs


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        if isinstance(value, (str, Substitution, list, tuple)):
            normalize_to_list_of_substitutions(value)
        self.value = value
        self.value_type = value_type


@dataclass
class Node:
    executable: str
    package: str | None = None
    name: str | None = None
    namespace: object = ""
    parameters: list = field(default_factory=list)
    remappings: list = field(default_factory=list)
    output: str = "log"
    arguments: list = field(default_factory=list)
    condition: IfCondition | None = None

    def __post_init__(self):
        normalize_to_list_of_substitutions(self.namespace)
        if self.condition is not None and not isinstance(self.condition, IfCondition):
            raise TypeError(f"unsupported condition {self.condition!r}")
        for p in self.parameters:
            if isinstance(p, dict):
                for v in p.values():
                    if isinstance(v, (list, tuple)):
                        normalize_to_list_of_substitutions(v)
            elif not isinstance(p, (ParameterFile, str, Substitution)):
                raise TypeError(f"unsupported parameters entry {p!r}")


def _modules() -> dict[str, types.ModuleType]:
    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    return {
        "launch": mod("launch", LaunchDescription=LaunchDescription, Substitution=Substitution),
        "launch.actions": mod("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument),
        "launch.conditions": mod("launch.conditions", IfCondition=IfCondition),
        "launch.substitutions": mod("launch.substitutions", LaunchConfiguration=LaunchConfiguration,
                                    PathJoinSubstitution=PathJoinSubstitution,
                                    TextSubstitution=TextSubstitution),
        "launch_ros": mod("launch_ros"),
        "launch_ros.actions": mod("launch_ros.actions", Node=Node),
        "launch_ros.parameter_descriptions": mod("launch_ros.parameter_descriptions",
                                                 ParameterFile=ParameterFile, ParameterValue=ParameterValue),
    }


def load(path) -> LaunchDescription:
    """Imports the launch file with this API in place and calls generate_launch_description()."""
    saved = {k: sys.modules.get(k) for k in _modules()}
    sys.modules.update(_modules())
    try:
        code = compile(open(path).read(), str(path), "exec")
        scope = {"__file__": str(path), "__name__": "launch_file"}
        exec(code, scope)
        return scope["generate_launch_description"]()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _value(v, context):
    if isinstance(v, ParameterValue):
        s = perform(v.value, context) if isinstance(v.value, (str, Substitution, list, tuple)) else v.value
        return v.value_type(s) if v.value_type else yaml.safe_load(s)
    if isinstance(v, (Substitution, list, tuple)):
        s = perform(v, context)
        parsed = yaml.safe_load(s) if s else s
        return parsed if isinstance(parsed, (bool, int, float, str)) else s
    return v


def _default_text(d) -> str:
    """A default as the XML launch file writes it ($(var name) for another argument)."""
    return "".join(f"$(var {x.name})" if isinstance(x, LaunchConfiguration) else x.perform({})
                   for x in normalize_to_list_of_substitutions(d))


def describe(ld: LaunchDescription, args: dict[str, str]) -> tuple[dict, list[dict]]:
    """Declared arguments (name -> default as written) and the resolved nodes
    (those whose condition holds) for `args`."""
    declared = {a.name: a for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    unknown = set(args) - set(declared)
    if unknown:
        raise KeyError(f"not declared: {sorted(unknown)}")
    context: dict[str, str] = {}
    for n, a in declared.items():  # in declaration order: a default may name an earlier argument
        if n in args:
            context[n] = args[n]
        elif a.default_value is not None:
            context[n] = perform(a.default_value, context)
    nodes = []
    for n in (e for e in ld.entities if isinstance(e, Node)):
        if n.condition is not None and not n.condition.evaluate(context):
            continue
        files, params = [], {}
        for p in n.parameters:
            if isinstance(p, ParameterFile):
                files.append(perform(p.path, context))
            elif isinstance(p, (str, Substitution)):
                files.append(perform(p, context))
            else:
                params.update({k: _value(v, context) for k, v in p.items()})
        nodes.append({
            "package": n.package, "executable": n.executable, "name": n.name,
            "namespace": perform(n.namespace, context), "files": files, "params": params,
            "remappings": [(perform(a, context), perform(b, context)) for a, b in n.remappings],
        })
    return {n: _default_text(a.default_value) if a.default_value is not None else None
            for n, a in declared.items()}, nodes
