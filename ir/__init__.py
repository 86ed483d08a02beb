"""The sglc program IR: node kinds, a networkx-backed Graph, printer, versioned JSON and verifier.

Pure Python + networkx: this package never imports torch, sglc, passes, runtime or grammar.
"""
from __future__ import annotations

from .graph import EDGE_KINDS, ROOT_STREAM, Graph
from .nodes import (
                    CHOICES_METHODS,
                    JOIN_MODES,
                    NODE_KINDS,
                    ROLES,
                    Argument,
                    Case,
                    Fork,
                    Gen,
                    GetForkItem,
                    Image,
                    Join,
                    Node,
                    NodeVisitor,
                    RoleBegin,
                    RoleEnd,
                    Select,
                    Switch,
                    Text,
                    VarRef,
)
from .printer import print_graph, print_node
from .serialize import FORMAT, VERSION, dumps, from_dict, loads, to_dict
from .verify import VerifyError, verify

__all__ = [
                    "CHOICES_METHODS",
                    "EDGE_KINDS",
                    "FORMAT",
                    "JOIN_MODES",
                    "NODE_KINDS",
                    "ROLES",
                    "ROOT_STREAM",
                    "VERSION",
                    "Argument",
                    "Case",
                    "Fork",
                    "Gen",
                    "GetForkItem",
                    "Graph",
                    "Image",
                    "Join",
                    "Node",
                    "NodeVisitor",
                    "RoleBegin",
                    "RoleEnd",
                    "Select",
                    "Switch",
                    "Text",
                    "VarRef",
                    "VerifyError",
                    "dumps",
                    "from_dict",
                    "loads",
                    "print_graph",
                    "print_node",
                    "to_dict",
                    "verify",
]
