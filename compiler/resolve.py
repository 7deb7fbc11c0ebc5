"""Static checks before evaluation: names, placement, signatures, duplicates, recursion."""

from __future__ import annotations

import keyword
from collections.abc import Iterable

from tritondsl.compiler import nodes as n
from tritondsl.compiler.diagnostics import Reporter, suggest
from tritondsl.compiler.functions import COMPILE_TIME, CONSTANTS, FORWARD_OPS
from tritondsl.compiler.instantiate import TENSOR_TYPES, TYPE_NAMES, input_sizes
from tritondsl.compiler.layers import LAYERS, REQUIRED

# relu -> ReLU(), leaky_relu -> LeakyReLU(): the layer form of a forward operation.
_LAYER_OF_OP = {
    name.lower(): f"{name}(...)"
    if any(a.default is REQUIRED for a in spec.signature)
    else f"{name}()"
    for name, spec in LAYERS.items()
} | {"interpolate": "Upsample(...)"}
RESERVED = {"Sequential", "Tensor", "TernaryTensor", *TYPE_NAMES}
GLOBALS = {*LAYERS, *COMPILE_TIME, *FORWARD_OPS, *CONSTANTS, "Sequential"}
# Words of the grammar; the contextual lexer would accept some of them as names where no
# keyword can appear (`let true = 3`), binding a name that can never be read.
LANGUAGE_KEYWORDS = {
    "let",
    "if",
    "elif",
    "else",
    "for",
    "in",
    "forward",
    "fn",
    "return",
    "param",
    "and",
    "or",
    "not",
    "true",
    "false",
}
# Keywords that are also names wherever the grammar cannot mistake them (tdsl.lark's
# `_member_name`), so torchvision's `features.1.block` or Hugging Face's `model.layers`
# can be written.
SOFT_KEYWORDS = {"block", "model", "layer", "input", "weights", "activations"}
# Names the generated Python module itself uses; a .tdsl name may not shadow them.
GENERATED_NAMES = {"self", "torch", "nn", "F", "rt", "super", "Tensor", "annotations"}
# The generated classes take the precisions as keyword arguments `weights` and
# `activations`, so neither can also be a compile-time value (a parameter, let or loop
# variable of __init__).
PRECISION_ARGUMENTS = ("weights", "activations")
_DECL_WORDS = {n.WeightsDecl: "weights", n.ActivationsDecl: "activations", n.ParamDecl: "param"}
# Public attributes of torch.nn.Module and nn.Sequential instances (torch 2.13), plus the one
# tritondsl sets on built models. A submodule or a value stored on the module (`self.NAME`)
# under one of these names would shadow it or be shadowed by it (`self.to(x)` would call
# Module.to). tests/compiler/test_check.py compares the list with torch itself. Names with
# a leading '_' (PyTorch's internals, the generator's temporaries) are refused as a class.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "append", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extend",
    "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
    "get_submodule", "half", "insert", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "pop",
    "register_backward_hook", "register_buffer", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad", "tdsl_spec",
})  # fmt: skip


def unsafe_identifier(name: str) -> str | None:
    """Why ``name`` cannot become a Python identifier in generated code, or None."""
    if name in LANGUAGE_KEYWORDS:
        return f"'{name}' is a keyword of the language and cannot be used as a name"
    if keyword.iskeyword(name):
        return f"'{name}' is a Python keyword and cannot be used as a name"
    if name.startswith("__"):
        return f"'{name}' starts with '__', which is reserved"
    if name in GENERATED_NAMES:
        return f"'{name}' is reserved for the generated PyTorch code"
    return None


def resolve(program: n.Program, reporter: Reporter) -> dict[str, n.Definition]:
    """Check the whole program statically; return definitions by name (first wins)."""
    definitions: dict[str, n.Definition] = {}
    for definition in program.definitions:
        if definition.name in RESERVED or definition.name in GLOBALS:
            reporter.error(
                f"'{definition.name}' is a built-in name; choose another name", definition.name_span
            )
        elif definition.name in definitions:
            first = definitions[definition.name]
            reporter.error(
                f"'{definition.name}' is defined twice",
                definition.name_span,
                notes=[("first defined here", first.name_span)],
            )
        else:
            definitions[definition.name] = definition
    for definition in program.definitions:
        _check_identifiers(definition, reporter)
        _DefinitionChecker(definition, definitions, reporter).run()
    _check_recursion(definitions, reporter)
    return definitions


class _DefinitionChecker:
    """Checks one definition: placement of statements, names, calls and types."""

    def __init__(
        self, definition: n.Definition, definitions: dict[str, n.Definition], reporter: Reporter
    ) -> None:
        self.d, self.definitions, self.reporter = definition, definitions, reporter
        self.block_names: set[str] = {p.name for p in definition.params}
        # Forward names not assigned yet at the statement being checked (see forward_statements).
        self.pending: set[str] = set()

    def run(self) -> None:
        """Run every check on the definition."""
        d = self.d
        seen: dict[str, n.Param] = {}
        for param in d.params:
            if param.name in seen:
                self.reporter.error(f"parameter '{param.name}' is declared twice", param.span)
            seen[param.name] = param
            self.type_expr(param.type)
            if d.kind == "model" and param.default is None:
                self.reporter.error(
                    f"model parameter '{param.name}' needs a default value",
                    param.span,
                    "models are checked with their default arguments",
                )
        if d.alias is not None:
            if not isinstance(d.alias, n.SeqExpr):
                self.reporter.error(
                    "a block defined with '=' must be a Sequential, e.g. "
                    "'block B(c: int) = Sequential { ... }'",
                    d.alias.span,
                )
            self.collect(d.alias.body if isinstance(d.alias, n.SeqExpr) else ())
            for param in d.params:
                if param.default is not None:
                    self.expr(param.default, self.block_names, forward=False)
            self.expr(d.alias, self.block_names, forward=False)
            return
        self.collect(d.body)
        for param in d.params:
            if param.default is not None:
                self.expr(param.default, self.block_names, forward=False)
        forwards = [s for s in d.body if isinstance(s, n.Forward)]
        if not forwards:
            self.reporter.error(
                f"{d.kind} '{d.name}' has no forward",
                d.name_span,
                "add 'forward(x) { ... return y }'",
            )
        for extra in forwards[1:]:
            self.reporter.error(f"{d.kind} '{d.name}' has more than one forward", extra.span)
        for kind, word in ((n.WeightsDecl, "weights"), (n.ActivationsDecl, "activations")):
            for extra in [s for s in d.body if isinstance(s, kind)][1:]:
                self.reporter.error(
                    f"{d.kind} '{d.name}' has more than one '{word}' statement", extra.span
                )
        self.check_name_kinds(d.body)
        inputs = [s for s in d.body if isinstance(s, n.InputDecl)]
        for i, decl in enumerate(inputs):
            if any(other.name == decl.name for other in inputs[:i]):
                self.reporter.error(f"input '{decl.name}' is declared twice", decl.span)
        if d.kind == "model" and not inputs:
            self.reporter.error(
                f"model '{d.name}' has no input declaration",
                d.name_span,
                "declare one, e.g. 'input x: Tensor[N, 3, 32, 32]'",
            )
        self.statements(d.body, "top")

    def check_name_kinds(self, body: Iterable[n.Stmt]) -> None:
        """A name is either a submodule or a compile-time value, never both."""
        members: dict[str, n.Span] = {}
        values: dict[str, n.Span] = {p.name: p.span for p in self.d.params}
        for node in n.walk_statements(body):
            if isinstance(node, n.Assign):
                members.setdefault(node.name, node.span)
            elif isinstance(node, n.Let | n.ParamDecl):
                values.setdefault(node.name, node.span)
            elif isinstance(node, n.For):
                for target in node.targets:
                    values.setdefault(target, node.span)
        for name in sorted(members.keys() & values.keys()):
            span = max(members[name], values[name], key=lambda s: (s.line, s.column))
            self.reporter.error(
                f"'{name}' is both a submodule and a compile-time value",
                span,
                "give them different names",
            )

    # ------------------------------------------------------------ scopes
    def collect(self, stmts: Iterable[n.Stmt], in_seq: bool = False) -> None:
        """Names bound anywhere in the block's compile-time code (flat scope, like Python)."""
        for stmt in stmts:
            match stmt:
                case n.Let() | n.ParamDecl():
                    self.block_names.add(stmt.name)
                    if isinstance(stmt, n.Let):
                        self.collect_seq(stmt.value)
                case n.Assign():
                    if not in_seq:
                        self.block_names.add(stmt.name)
                    self.collect_seq(stmt.value)
                case n.ExprStmt():
                    self.collect_seq(stmt.expr)
                case n.For():
                    self.block_names.update(stmt.targets)
                    self.collect(stmt.body, in_seq)
                case n.If():
                    for _, body in stmt.branches:
                        self.collect(body, in_seq)
                    self.collect(stmt.orelse or (), in_seq)

    def collect_seq(self, expr: n.Expr) -> None:
        # Stop at each Sequential: collect() finds the ones nested in its body. Walking
        # into them here as well would visit nested Sequentials exponentially often.
        stack: list[object] = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, n.SeqExpr):
                self.collect(node.body, in_seq=True)
            else:
                stack.extend(n.children(node))

    @staticmethod
    def assigned_names(node: object) -> set[str]:
        """Names bound by let, assignment or for anywhere below ``node``."""
        names: set[str] = set()
        for sub in n.walk(node):
            if isinstance(sub, n.Let | n.Assign):
                names.add(sub.name)
            elif isinstance(sub, n.For):
                names.update(sub.targets)
        return names

    # ------------------------------------------------------------ statements
    def statements(self, stmts: Iterable[n.Stmt], where: str) -> None:
        """Check placement and contents; ``where`` is top, nested, seq or forward."""
        for stmt in stmts:
            self.statement(stmt, where)

    def statement(self, stmt: n.Stmt, where: str) -> None:
        names = self.block_names
        match stmt:
            case n.Forward():
                if where != "top":
                    self.reporter.error(
                        "forward must be at the top level of a definition", stmt.span
                    )
                params = [p.name for p in stmt.params]
                for i, param in enumerate(stmt.params):
                    if param.name in params[:i]:
                        self.reporter.error(
                            f"forward parameter '{param.name}' is declared twice", param.span
                        )
                    if param.type is not None:
                        self.type_expr(param.type)
                if stmt.returns is not None:
                    self.type_expr(stmt.returns)
                sizes = {
                    name
                    for name in input_sizes(self.d)
                    if name not in names and name not in self.definitions and name not in CONSTANTS
                }
                self.pending = self.assigned_names(stmt) - names - set(params) - sizes
                self.forward_statements(stmt.body, names | set(params) | sizes)
                self.pending = set()
                # A 'return' followed by more statements is reported as dead code instead.
                has_return = any(isinstance(s, n.Return) for s in stmt.body)
                if not has_return and not (stmt.body and isinstance(stmt.body[-1], n.If)):
                    self.reporter.error("forward must end with a return", stmt.span)
            case n.InputDecl():
                if self.d.kind != "model" or where != "top":
                    self.reporter.error(
                        "'input' declarations belong at the top level of a model", stmt.span
                    )
                self.type_expr(stmt.type)
            case n.WeightsDecl() | n.ActivationsDecl() | n.ParamDecl():
                word = _DECL_WORDS[type(stmt)]
                if where != "top":
                    self.reporter.error(
                        f"'{word}' belongs at the top level of a definition", stmt.span
                    )
                if not isinstance(stmt, n.ParamDecl):
                    self.expr(stmt.precision, names, forward=False)
                else:
                    self.type_expr(stmt.type)
                    if stmt.init is not None:
                        self.expr(stmt.init, names, forward=False)
            case n.Let():
                if stmt.type is not None:
                    self.type_expr(stmt.type)
                self.expr(stmt.value, names, forward=False)
            case n.Assign():
                self.expr(stmt.value, names, forward=False)
            case n.ExprStmt():
                if where != "seq":
                    self.reporter.error(
                        "this expression has no effect here",
                        stmt.span,
                        "name it to make it a submodule: 'name = ...'",
                    )
                self.expr(stmt.expr, names, forward=False)
            case n.If():
                inner = "seq" if where == "seq" else "nested"
                for cond, body in stmt.branches:
                    self.expr(cond, names, forward=False)
                    self.statements(body, inner)
                self.statements(stmt.orelse or (), inner)
            case n.For():
                self.expr(stmt.iterable, names, forward=False)
                self.statements(stmt.body, "seq" if where == "seq" else "nested")
            case n.Return():
                self.reporter.error("'return' belongs inside forward", stmt.span)

    def forward_statements(self, stmts: Iterable[n.Stmt], names: set[str]) -> None:
        """Check forward statements in order; ``names`` grows as bindings are assigned."""
        stmts = list(stmts)
        for i, stmt in enumerate(stmts):
            match stmt:
                case n.Let() | n.Assign():
                    self.expr(stmt.value, names, forward=True)
                    names.add(stmt.name)
                case n.Return():
                    self.expr(stmt.value, names, forward=True)
                    if i != len(stmts) - 1:
                        self.reporter.error(
                            "statements after 'return' never run", stmts[i + 1].span
                        )
                case n.If():
                    for cond, body in stmt.branches:
                        self.expr(cond, names, forward=True)
                        self.forward_statements(body, names)
                    self.forward_statements(stmt.orelse or (), names)
                case n.For():
                    self.expr(stmt.iterable, names, forward=True)
                    # A later iteration may read what an earlier one assigned.
                    names.update(stmt.targets, *map(self.assigned_names, stmt.body))
                    self.forward_statements(stmt.body, names)
                case n.ExprStmt():
                    self.expr(stmt.expr, names, forward=True)
                    self.reporter.error(
                        "the value of this expression is not used",
                        stmt.span,
                        "assign it (y = ...) or return it",
                    )
                case _:
                    self.reporter.error("this statement is not allowed inside forward", stmt.span)

    # ------------------------------------------------------------ expressions
    def expr(self, expr: n.Expr, names: set[str], forward: bool) -> None:
        """Check every name and call inside ``expr`` (Sequential bodies as statements)."""
        stack: list[object] = [expr]
        called: set[int] = set()  # the Name nodes that are called
        while stack:
            node = stack.pop()
            match node:
                case n.SeqExpr():
                    if forward:
                        self.reporter.error("layers cannot be created inside forward", node.span)
                    else:
                        self.statements(node.body, "seq")
                    continue
                case n.Name():
                    self.name(node, names, forward, called=id(node) in called)
                case n.Call(func=n.Name(id=callee) as func):
                    called.add(id(func))
                    if callee not in names:
                        self.call(node, callee, forward)
            stack.extend(n.children(node))

    def name(self, node: n.Name, names: set[str], forward: bool, called: bool = False) -> None:
        if node.id in names or node.id in self.definitions or node.id in GLOBALS:
            if not forward and node.id in FORWARD_OPS and node.id not in names:
                layer = _LAYER_OF_OP.get(node.id.replace("_", ""))
                self.reporter.error(
                    f"{node.id}() is a forward operation",
                    node.span,
                    f"to create a layer use {layer}" if layer else "use it inside forward",
                )
            return
        if node.id in self.pending:
            self.reporter.error(f"'{node.id}' is used before it is assigned", node.span)
            return
        self.unknown(node, names, forward, called)

    def unknown(self, node: n.Name, names: set[str], forward: bool, called: bool) -> None:
        """``unknown name``, suggesting only names of the kind that fits where it is used:
        a capitalized call is a layer or a block, a call a function or a member, anything
        else a value; an unknown layer or function also lists the ones there are."""
        notes: list[tuple[str, n.Span | None]] = []
        definitions = sorted(self.definitions)
        if called and node.id[:1].isupper():
            pool = {*LAYERS, "Sequential", *definitions}
            notes.append((f"layers: {', '.join(sorted(LAYERS))}", None))
            if definitions:
                notes.append((f"defined in this file: {', '.join(definitions)}", None))
        elif called:
            functions = FORWARD_OPS if forward else COMPILE_TIME
            pool = {*names, *functions, *COMPILE_TIME} if forward else set(functions)
            where = "forward operations" if forward else "compile-time functions"
            notes.append((f"{where}: {', '.join(sorted(functions))}", None))
        else:
            pool = names | set(CONSTANTS)
        hint = suggest(node.id, pool)
        self.reporter.error(f"unknown name '{node.id}'", node.span, hint, notes)

    def call(self, node: n.Call, callee: str, forward: bool) -> None:
        if forward and (callee in LAYERS or callee in self.definitions):
            self.reporter.error(
                f"{callee} cannot be created inside forward",
                node.span,
                "declare it in the block (name = ...) and call it by name",
            )
            return
        if callee in LAYERS:
            params = [a.name for a in LAYERS[callee].signature]
        elif callee in self.definitions:
            params = [p.name for p in self.definitions[callee].params]
        else:
            return
        if len(node.args) > len(params):
            most = {0: "no arguments", 1: "at most 1 argument"}.get(
                len(params), f"at most {len(params)} arguments"
            )
            self.reporter.error(f"{callee} takes {most}, got {len(node.args)}", node.span)
        for kw in node.kwargs:
            if kw.name not in params:
                self.reporter.error(
                    f"{callee} has no parameter '{kw.name}'", kw.span, suggest(kw.name, params)
                )
            elif params.index(kw.name) < len(node.args):
                self.reporter.error(f"{callee} got two values for '{kw.name}'", kw.span)

    def type_expr(self, type_: n.TypeExpr) -> None:
        if type_.name not in TYPE_NAMES:
            self.reporter.error(
                f"unknown type '{type_.name}'", type_.span, _suggest_type(type_.name, TYPE_NAMES)
            )
        elif type_.name in ("tuple", "list"):
            self.element_types(type_)
            return
        elif type_.name not in TENSOR_TYPES and type_.args is not None:
            self.reporter.error(f"type '{type_.name}' takes no [...]", type_.span)
            return
        for arg in type_.args or ():
            if not isinstance(arg, n.Name):  # bare names are symbolic sizes or dtypes
                self.expr(arg, self.block_names, forward=False)

    def element_types(self, type_: n.TypeExpr) -> None:
        """``list[int]``, ``tuple[int, float]``: each argument names a non-tensor type."""
        allowed = [t for t in TYPE_NAMES if t not in TENSOR_TYPES]
        for arg in type_.args or ():
            if not isinstance(arg, n.Name):
                self.reporter.error(
                    f"the element types of {type_.name}[...] must be type names such as int",
                    arg.span,
                )
            elif arg.id not in allowed:
                self.reporter.error(
                    f"unknown element type '{arg.id}'", arg.span, _suggest_type(arg.id, allowed)
                )


# Type names of other languages, and the language's name for them.
_TYPE_SYNONYMS = {"integer": "int", "boolean": "bool", "string": "str", "double": "float"}


def _suggest_type(name: str, allowed: Iterable[str]) -> str | None:
    synonym = _TYPE_SYNONYMS.get(name)
    if synonym in allowed:
        return f"did you mean '{synonym}'?"
    return suggest(name, allowed)


def _check_identifiers(definition: n.Definition, reporter: Reporter) -> None:
    """Every name a definition binds or passes as a keyword must be safe in Python."""
    found: list[tuple[str, n.Span]] = [(definition.name, definition.name_span)]
    found += [(p.name, p.span) for p in definition.params]
    for node in n.walk(definition):
        match node:
            case n.Let() | n.Assign() | n.InputDecl() | n.ParamDecl() | n.FwdParam() | n.Keyword():
                found.append((node.name, node.span))
            case n.For():
                found.extend((t, node.span) for t in node.targets)
            case n.Attribute():
                found.append((node.name, node.span))
    for name, span in found:
        problem = unsafe_identifier(name)
        if problem:
            reporter.error(problem, span)
    for name, span in _bound_names(definition):
        if name.startswith("_"):
            reporter.error(
                f"'{name}' starts with '_': such names are reserved for PyTorch's module "
                "internals and the generated code",
                span,
            )
        elif name in MODULE_ATTRIBUTES:
            reporter.error(
                f"'{name}' is an attribute of torch.nn.Module; a submodule or value named so "
                "would break the generated module",
                span,
                "choose another name",
            )
    for name, span in _init_values(definition):
        if name in PRECISION_ARGUMENTS:
            reporter.error(
                f"'{name}' cannot be a compile-time value: the generated classes take the "
                f"{'weight' if name == 'weights' else 'activation'} precision as their "
                f"argument '{name}'",
                span,
                f"'{name}' can name a submodule or a forward value; rename this one",
            )


def _init_values(definition: n.Definition) -> list[tuple[str, n.Span]]:
    """Names that become Python locals of the generated __init__ (params, let, for, param)."""
    return _bound_names(definition, members=False)


def _bound_names(definition: n.Definition, members: bool = True) -> list[tuple[str, n.Span]]:
    """Names a definition binds outside forward: parameters, let, for, param and (with
    ``members``) submodules; each may end up as an attribute of the generated module."""
    found = [(p.name, p.span) for p in definition.params]
    body = [definition.alias] if definition.alias is not None else definition.body
    for stmt in body:
        if isinstance(stmt, n.Forward):
            continue
        for node in n.walk(stmt):
            match node:
                case n.Let() | n.ParamDecl():
                    found.append((node.name, node.span))
                case n.Assign() if members:
                    found.append((node.name, node.span))
                case n.For():
                    found.extend((t, node.span) for t in node.targets)
    return found


def _check_recursion(definitions: dict[str, n.Definition], reporter: Reporter) -> None:
    """Report blocks that (directly or indirectly) contain themselves."""
    uses: dict[str, list[tuple[str, n.Span]]] = {}
    for name, definition in definitions.items():
        refs = []
        for node in n.walk(definition):
            if isinstance(node, n.Name) and node.id in definitions:
                refs.append((node.id, node.span))
        uses[name] = refs
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[frozenset[str]] = set()
    for root in definitions:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            name, i = stack.pop()
            if i == 0:
                state[name] = 1
                path.append(name)
            if i < len(uses[name]):
                stack.append((name, i + 1))
                target, span = uses[name][i]
                if state.get(target) == 1:
                    cycle = [*path[path.index(target) :], target]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        reporter.error(
                            f"recursive definition: {' -> '.join(cycle)}",
                            span,
                            "a block cannot contain itself",
                        )
                elif not state.get(target):
                    stack.append((target, 0))
            else:
                state[name] = 2
                path.pop()
