"""Quantizing the token embedding and the LM head, which dominate small models with large vocabularies.

ONNX Runtime's MatMulNBits quantizer leaves both in fp32 in an exported model with tied embeddings: the head's
MatMul reads the embedding through a Transpose (no constant weight), and the embedding's Gather shares that
initializer. Gemma 3 270M keeps 168M of its 268M weights there, so its int8 file stayed 752 MB. Two graph passes
fix that before the quantizer runs:
- `untie_head`: the head gets its own transposed copy as a constant, so MatMulNBits quantizes it like the layers;
- `int8_embedding`: the embedding becomes int8 rows with one fp32 scale per row (Gather both, Cast, Mul): ONNX
  Runtime's GatherBlockQuantized takes 4 bits only, so int4 variants use it and int8 variants use this.
The variant still has to pass the same quality gate as before (ROUGE-L against fp32 on test questions).
"""

from __future__ import annotations

MIN_ROWS = 1000  # a Gather over a float table with at least this many rows is a token embedding


def _index(model) -> tuple:
    """(graph, {initializer name: initializer}, {tensor name: the nodes that read it})."""
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return model.graph, {i.name: i for i in model.graph.initializer}, users


def untie_head(model) -> list[str]:
    """Give every MatMul that reads a 2-D initializer through a Transpose its own transposed constant."""
    import numpy as np
    from onnx import numpy_helper

    graph, inits, users = _index(model)
    done = []
    for node in list(graph.node):
        src = node.input[0] if node.op_type == "Transpose" else None
        if src not in inits or len(inits[src].dims) != 2:
            continue
        readers = users.get(node.output[0], [])
        if not readers or any(r.op_type != "MatMul" for r in readers):
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        w = np.ascontiguousarray(numpy_helper.to_array(inits[src]).transpose(perm))
        head = numpy_helper.from_array(w, name=f"{src}.transposed")
        graph.initializer.append(head)
        for r in readers:
            r.input[:] = [head.name if x == node.output[0] else x for x in r.input]
        graph.node.remove(node)
        done.append(src)
    return done


def int8_embedding(model) -> list[str]:
    """Replace each Gather over a large fp32 table (read by nothing else) with int8 rows and per-row scales."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph, inits, users = _index(model)
    done = []
    for node in list(graph.node):
        table = node.input[0] if node.op_type == "Gather" else None
        if (table not in inits or len(inits[table].dims) != 2 or inits[table].dims[0] < MIN_ROWS
                or inits[table].data_type != TensorProto.FLOAT or len(users[table]) != 1
                or any(a.name == "axis" and a.i != 0 for a in node.attribute)):
            continue
        w = numpy_helper.to_array(inits[table])
        scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12).astype(np.float32) / 127.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(inits[table])
        graph.initializer.extend([numpy_helper.from_array(q, f"{table}.int8"),
                                  numpy_helper.from_array(scale, f"{table}.scale")])
        ids, out = node.input[1], node.output[0]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        new = [helper.make_node("Gather", [f"{table}.int8", ids], [f"{out}.q"], axis=0, name=f"{node.name}.q"),
               helper.make_node("Gather", [f"{table}.scale", ids], [f"{out}.s"], axis=0, name=f"{node.name}.s"),
               helper.make_node("Cast", [f"{out}.q"], [f"{out}.f"], to=TensorProto.FLOAT, name=f"{node.name}.cast"),
               helper.make_node("Mul", [f"{out}.f", f"{out}.s"], [out], name=f"{node.name}.mul")]
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        done.append(table)
    return done
