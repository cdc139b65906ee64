"""``fedchain model --export FILE``: the global model as a file plain PyTorch loads.

The weights come from a node (``/fl/model/{hash}``, checked against the hash it names) and the
architecture from the genesis task, so the file is the chain's model and nothing else. It is a
``torch.export`` program (``.pt2``): ``torch.export.load(FILE).module()`` gives a module that
takes a float32 batch of flat samples ``(n, features)`` and returns class logits, with no
fedchain code installed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cli.client import NodeClient
from cli.common import CliError


def export_model(client: NodeClient, model: dict, out: Path) -> None:
    """Write the global ``model`` (as ``/fl/model`` described it) to ``out``."""
    import torch

    from gossip.codec import DecodeError, decode_array, unpack
    from learning.models import set_flat
    from learning.torchnet import torch_module
    from node.fl.task import Task

    task_raw = client.get_json("/genesis").get("app", {}).get("task")
    if not task_raw:
        raise CliError("this chain's genesis names no task, so the model's architecture is not pinned; "
                       "export needs a chain with app.task")
    task = Task.from_dict(task_raw)
    raw = client.request("GET", model["blob"])
    if hashlib.sha256(raw).hexdigest() != model["hash"]:
        raise CliError(f"the node served weights whose hash is not the model's {model['hash']}; refusing them")
    try:
        vector = decode_array(unpack(raw, len(raw) + 1024))
    except DecodeError as exc:
        raise CliError(f"the node served unreadable weights: {exc}") from None
    torch.set_num_threads(1)
    model = task.build(0)
    set_flat(model, vector)
    net = torch_module(model)
    # independent tensors: the training layout keeps every parameter as a view of one buffer
    net.load_state_dict({k: v.detach().clone() for k, v in net.state_dict().items()}, assign=True)
    net.eval()
    features = 1
    for s in task.input_shape:
        features *= s
    program = torch.export.export(net, (torch.zeros(2, features),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, out)
