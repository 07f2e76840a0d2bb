"""Utilities over networks (as ``monai.networks.utils`` holds MONAI's helpers over networks): forward hooks that record
the feature maps of named modules, and folding parametrisations (spectral norm) into plain weights for export."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any, Self

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["BASIC_UNET_LAYERS", "INPUT_LAYER", "FeatureRecorder", "fold_parametrizations"]

#: the 18 convolution outputs (conv + norm + activation) of MONAI's ``BasicUNet``, in forward order: the
#: 18 feature maps of the U-Net of the ProtoSeg paper (Fig. 4), early (1-4), deep abstract (5-14), late (15-18).
BASIC_UNET_LAYERS: tuple[str, ...] = (
    "conv_0.conv_0",
    "conv_0.conv_1",
    *(f"down_{i}.convs.conv_{j}" for i in (1, 2, 3, 4) for j in (0, 1)),
    *(f"upcat_{i}.convs.conv_{j}" for i in (4, 3, 2, 1) for j in (0, 1)),
)

#: the name that records the network's input (its first positional argument) instead of a module's output.
INPUT_LAYER = "input"

#: how many module names an error message lists.
_MAX_LISTED = 12


class FeatureRecorder:
    """
    Record the outputs of named modules of ``network`` at every forward pass, with forward hooks: after
    ``network(x)``, :py:meth:`pop` returns ``{name: feature map}`` for the layers of that pass. Each layer keeps
    its latest output (a module called twice in one pass, or a sliding-window inferer, keeps the last call).

    The name :data:`INPUT_LAYER` (``"input"``) records the network's input tensor, the "features" of the input
    separability ``S_x`` of the ProtoSeg paper (section 4.7).

    Example::

        recorder = FeatureRecorder(net, BASIC_UNET_LAYERS)
        logits = net(images)
        features = recorder.pop()  # 18 tensors (B, C_l, *spatial_l)
        recorder.remove()

    Args:
        network: the network to hook; one wrapped in ``DistributedDataParallel`` or ``DataParallel`` is hooked
            through its ``module``, so the layer names are the plain network's (as in its checkpoints).
        layers: names of modules as ``network.named_modules()`` gives them (``"down_1.convs.conv_0"``), and
            optionally ``"input"``; ``None`` gives :data:`BASIC_UNET_LAYERS`.
        detach: record detached tensors (analysis); ``False`` keeps the graph (a loss on the features).
    """

    def __init__(self, network: nn.Module, layers: Sequence[str] | None = None, detach: bool = True) -> None:
        layers = list(BASIC_UNET_LAYERS if layers is None else layers)
        if not layers:
            raise ValueError("layers must name at least one module.")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers lists a name twice: {layers}.")
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        modules = dict(network.named_modules())
        missing = [name for name in layers if name != INPUT_LAYER and name not in modules]
        if missing:
            names = [n for n in modules if n]
            close = sorted({c for name in missing for c in difflib.get_close_matches(name, names, n=3)})
            shallow = [n for n in names if n.count(".") <= 2]
            listed = ", ".join(shallow[:_MAX_LISTED]) + (" ..." if len(shallow) > _MAX_LISTED else "")
            raise ValueError(
                f"{type(network).__name__} has no module named {', '.join(map(repr, missing))}"
                + (f" (close: {', '.join(close)})" if close else "")
                + f"; its modules include {listed} ({len(names)} in all, see network.named_modules()). "
                "The default layers are the 18 convolutions of MONAI's BasicUNet; name your network's modules instead."
            )
        self.layers = layers
        self.detach = detach
        self._features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in layers:
            if name == INPUT_LAYER:
                self._handles.append(network.register_forward_pre_hook(self._input_hook))
            else:
                self._handles.append(modules[name].register_forward_hook(self._output_hook(name)))

    def _keep(self, name: str, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"Layer {name!r} gave a {type(value).__name__}, not a tensor; hook a module that returns one."
            )
        self._features[name] = value.detach() if self.detach else value

    def _input_hook(self, module: nn.Module, args: tuple) -> None:
        if not args:
            raise TypeError(
                f"{type(module).__name__} was called without a positional input; cannot record {INPUT_LAYER!r}."
            )
        self._keep(INPUT_LAYER, args[0])

    def _output_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._keep(name, output)

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """
        The recorded feature maps in the order of ``layers``, forgetting them.

        Raises:
            RuntimeError: a layer was not run since the last ``pop`` (no forward pass, or a branch not taken).
        """
        missing = [name for name in self.layers if name not in self._features]
        if missing:
            raise RuntimeError(f"No output recorded for layers {missing}: did the network run a forward pass?")
        features = {name: self._features[name] for name in self.layers}
        self._features = {}
        return features

    def clear(self) -> None:
        """Forget the recorded feature maps."""
        self._features = {}

    def remove(self) -> None:
        """Remove the hooks from the network."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def fold_parametrizations(network: nn.Module) -> nn.Module:
    """
    A copy of ``network`` in which every parametrised tensor (``torch.nn.utils.parametrize``; here the spectral norm of
    ``torch.nn.utils.parametrizations.spectral_norm``) is replaced by a plain parameter holding the value the network
    uses in eval mode: for spectral norm ``W / sigma`` with the stored power-iteration vectors, computed once without
    a new iteration. The copy's eval-mode outputs equal the network's; it no longer normalises its weights when
    trained. ``network`` itself is left as it is.

    TorchScript cannot compile parametrisations: ``torch.jit.script(fold_parametrizations(net))`` scripts a network
    that uses them, and :py:class:`~monai_ext.networks.nets.SAGANGenerator` and ``SAGANDiscriminator`` hand this copy
    to ``torch.jit.script`` by themselves (their ``__prepare_scriptable__``; scripting a module that holds one of them
    puts the folded copy in its place there, as that protocol of torch does).
    """
    folded = copy.deepcopy(network)
    for module in [m for m in folded.modules() if parametrize.is_parametrized(m)]:
        # a deep copy shares the class that parametrize made for the original module, and removing the last
        # parametrisation deletes the tensor's property from that class: give the copy a class of its own first
        cls = type(module)
        module.__class__ = type(
            cls.__name__, cls.__bases__, {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        )
        module.parametrizations.eval()  # no power iteration while the value is read
        for name in list(module.parametrizations.keys()):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return folded
