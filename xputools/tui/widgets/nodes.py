"""The ONNX node tree: the model's nodes in program order, grouped by the first part of their
path ("/layer.0/..."); the current node is selected; choosing one (Enter) asks for a breakpoint at it."""
from __future__ import annotations

from textual.message import Message
from textual.widgets import Tree

from xputools.debug import Debugger


class NodeTree(Tree):
    class Chosen(Message):
        def __init__(self, node: str):
            super().__init__()
            self.node = node

    def __init__(self, dbg: Debugger, **kw):
        model = dbg.program.meta.get("model") or dbg.program.meta.get("source") or "program"
        super().__init__(str(model), **kw)
        self.dbg = dbg
        self.border_title = "nodes (Enter: break)"
        self._by_name = {}
        self.show_root = False
        groups = {}
        for dbg_id in sorted(dbg.index.by_dbg):
            origin = dbg.program.origins[dbg_id] if 0 <= dbg_id < len(dbg.program.origins) else None
            if origin is None:
                continue
            parts = origin.name.strip("/").split("/")
            parent = self.root
            if len(parts) > 1:
                if parts[0] not in groups:
                    groups[parts[0]] = self.root.add(parts[0], expand=True)
                parent = groups[parts[0]]
            label = f"{origin.name}" + (f"  ({origin.op_type})" if origin.op_type else "")
            self._by_name[origin.name] = parent.add_leaf(label, data=origin.name)
        self.root.expand()
        if not self._by_name:
            self.border_title = "nodes (none: a hand-written program)"

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def show_node(self, name: str) -> None:
        node = self._by_name.get(name)
        if node is not None and not self.has_focus:
            self.move_cursor(node)

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()
        if event.node.data:
            self.post_message(self.Chosen(event.node.data))
