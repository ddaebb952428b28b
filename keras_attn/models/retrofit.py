"""Retrofit attention into models someone else built, starting as the identity.

Papers: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks",
CVPR 2018, https://arxiv.org/abs/1709.01507 (Fig. 3: SE on the residual
branch, before the addition; after each block of non-residual networks), and
Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV
2018, https://arxiv.org/abs/1807.06521 (Fig. 3: the same place). The
identity start is that of non-local blocks, Wang, Girshick, Gupta, He,
"Non-local Neural Networks", CVPR 2018, https://arxiv.org/abs/1711.07971
(see `keras_attn.layers.IdentityGate`).

`add_attention(model, "se")` rebuilds a functional or Sequential Keras model
(`keras.applications.ResNet50`, `MobileNetV2`, `EfficientNetB0`, a keras-hub
backbone, a keras_attn model, your own) with an attention module inserted at
places found from its graph, copies every existing weight, and wraps each
module in an `IdentityGate` whose scalar gate starts at 0, so the new model
computes exactly what the old one did until it is fine-tuned.

Where modules go (`where=`):

- `"blocks"`: every residual block gets one on its residual branch, just
  before its `Add`. A residual `Add` is found from the graph: its inputs
  meet at a fork (their nearest common ancestor), one input reaches the fork
  through more layers than the others (the residual branch, which must hold
  a convolution) and the others are the shortcut (identity, or a short
  projection). Blocks without an `Add` (MobileNetV2's and EfficientNet's
  first block of each stage) get one after their last layer, recognised as
  a layer outside every residual block that ends like the residual branches
  do (same layer type after the same kind of convolution, and likewise not
  followed by an activation: MobileNetV2's and EfficientNet's projection
  BatchNorms). A model with no residual `Add` at all (a plain VGG-like
  stack) gets one after every convolution unit: each non-depthwise
  convolution followed by its BatchNorm and/or activation, after the last
  of them.
- `"stages"`: one per resolution stage, after the output of its last block
  (the blocks above), a stage being a run of blocks with the same height and
  width. Needs known heights and widths.
- a predicate `where(layer) -> bool`, or a list of layer names: after every
  matching layer (nested models' layers included), whose output must be
  `(batch, height, width, channels)`.

Nested functional or Sequential models (`keras.Sequential([base, ...])`,
`base(inputs)` inside a functional model) are rebuilt recursively; a shared
layer gets a module after each of its calls. Subclassed models cannot be
rebuilt (their graph is in Python code): build them functionally, or call
keras_attn layers in their `call`.
"""

from __future__ import annotations

import collections

import keras
from keras.src.models.functional import Functional

from keras_attn.layers.attention_factory import available_attentions
from keras_attn.layers.attention_factory import get_attention
from keras_attn.layers.attention_factory import registered_name
from keras_attn.layers.identity_gate import IdentityGate
from keras_attn.utils import validation

WHERE = ("blocks", "stages")
_CALLER = "add_attention"

Site = collections.namedtuple("Site", "kind model layer branch shape")
Site.__doc__ = """Where `add_attention` puts one attention module.

- `kind`: `"residual"` (on input `branch` of the `Add` named `layer`),
  `"block"` (after the last layer of a block without an `Add`), `"stage"`
  (after the last block of a stage) or `"layer"` (after a layer chosen by a
  predicate or a list of names); all but `"residual"` go after `layer`.
- `model`: the name of the (possibly nested) model holding `layer`.
- `layer`: the layer's name.
- `branch`: for `"residual"`, the name of the layer producing the residual
  branch (the input of `layer` the module goes on); else `None`.
- `shape`: the shape `(batch, height, width, channels)` the module sees.
"""

_ACTIVATIONS = (
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
)
_NORMS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_TRANSPARENT_NAMES = ("Dropout", "StochasticDepth", "DropPath", "Identity",
                      "GaussianNoise", "ActivityRegularization")


def _is_add(op):
    return isinstance(op, keras.layers.Add) or type(op).__name__ == "Add"


def _is_activation(op):
    return isinstance(op, _ACTIVATIONS)


def _is_norm(op):
    return isinstance(op, _NORMS)


def _is_transparent(op):
    name = type(op).__name__
    return any(part in name for part in _TRANSPARENT_NAMES)


def _is_conv(op):
    """A layer with a kernel: a convolution (any) or a dense layer."""
    return isinstance(op, keras.layers.Layer) and (
        isinstance(op, keras.layers.Dense)
        or (hasattr(op, "kernel_size") and hasattr(op, "kernel"))
    )


def _is_image(tensor):
    shape = tuple(tensor.shape)
    return len(shape) == 4 and shape[-1] is not None


class _Graph:
    """The nodes of one functional model in topological order, with each
    tensor's producer, consumers and ancestors (by tensor id)."""

    def __init__(self, model):
        self.model = model
        by_depth = model._nodes_by_depth
        self.nodes = [
            node
            for depth in sorted(by_depth, reverse=True)
            for node in by_depth[depth]
            if node.operation is not None and not node.is_input
        ]
        self.position = {}
        self.producer = {}
        self.consumers = collections.defaultdict(list)
        self.ancestors = {}
        for tensor in model.inputs:
            self.position[id(tensor)] = -1
            self.ancestors[id(tensor)] = frozenset([id(tensor)])
        for i, node in enumerate(self.nodes):
            upstream = set()
            for tensor in node.input_tensors:
                self.consumers[id(tensor)].append(node)
                upstream |= self.ancestors.get(id(tensor),
                                               frozenset([id(tensor)]))
            for tensor in node.outputs:
                self.position[id(tensor)] = i
                self.producer[id(tensor)] = node
                self.ancestors[id(tensor)] = frozenset(upstream | {id(tensor)})

    def single_input_producer(self, node):
        """The node producing `node`'s only input, or `None`."""
        if len(node.input_tensors) != 1:
            return None
        return self.producer.get(id(node.input_tensors[0]))

    def consumers_through_transparent(self, tensor):
        """Consumers of `tensor`, looking through dropout-like layers."""
        found = []
        for node in self.consumers.get(id(tensor), ()):
            if _is_transparent(node.operation) and len(node.outputs) == 1:
                found.extend(self.consumers_through_transparent(
                    node.outputs[0]))
            else:
                found.append(node)
        return found


def _residual(graph, node):
    """`(branch index, fork tensor id, region)` when `node` is the `Add` of
    a residual block, else `None`. `region` is the set of tensor ids
    inside the block (both branches, the fork excluded)."""
    if not _is_add(node.operation):
        return None
    inputs = node.input_tensors
    if len(inputs) < 2 or not all(_is_image(t) for t in inputs):
        return None
    common = frozenset.intersection(
        *(graph.ancestors[id(t)] for t in inputs))
    if not common:
        return None
    fork = max(common, key=lambda t: graph.position[t])
    before_fork = graph.ancestors[fork]
    branches = [graph.ancestors[id(t)] - before_fork for t in inputs]
    sizes = sorted((len(b), i) for i, b in enumerate(branches))
    (longest, index), runner_up = sizes[-1], sizes[-2][0]
    if longest == runner_up:
        return None  # no shortcut to tell from the branch
    if not any(_is_conv(graph.producer[t].operation)
               for t in branches[index] if t in graph.producer):
        return None
    region = frozenset().union(*branches)
    return index, fork, region


def _branch_end(graph, tensor):
    """The node producing `tensor`, looking back through dropout-like
    layers (EfficientNet's residual branch ends in a Dropout)."""
    node = graph.producer.get(id(tensor))
    while (node is not None and _is_transparent(node.operation)
           and len(node.input_tensors) == 1):
        node = graph.producer.get(id(node.input_tensors[0]))
    return node


def _signature(graph, node):
    """How a block ends: the end layer's class, the class and kernel size
    of the convolution before it, and whether an activation follows."""
    conv, current = None, node
    for _ in range(4):
        if current is None:
            break
        op = current.operation
        if _is_conv(op):
            conv = op
            break
        if not (_is_norm(op) or _is_activation(op) or _is_transparent(op)):
            break
        current = graph.single_input_producer(current)
    activated = any(
        _is_activation(c.operation)
        for c in graph.consumers_through_transparent(node.outputs[0])
    )
    kernel = getattr(conv, "kernel_size", None)
    return (
        type(node.operation).__name__,
        type(conv).__name__ if conv is not None else None,
        tuple(kernel) if isinstance(kernel, (tuple, list)) else kernel,
        activated,
    )


def _unit_end(graph, node):
    """The end of the convolution unit starting at conv `node`: the last of
    the BatchNorm / activation layers that follow it one after the other,
    or the conv itself when it has its own activation; `None` for a linear
    conv followed by neither."""
    end = node
    while len(end.outputs) == 1:
        consumers = graph.consumers.get(id(end.outputs[0]), ())
        if len(consumers) != 1:
            break
        following = consumers[0]
        if not (_is_norm(following.operation)
                or _is_activation(following.operation)):
            break
        end = following
    if end is node:
        activation = getattr(node.operation, "activation", None)
        if activation is None or activation is keras.activations.linear:
            return None
    return end


def _block_output(graph, add_node):
    """The output node of a residual block: its `Add`, or the activation
    that alone reads it (ResNet's ReLU after the addition)."""
    consumers = graph.consumers.get(id(add_node.outputs[0]), ())
    if len(consumers) == 1 and _is_activation(consumers[0].operation):
        return consumers[0]
    return add_node


def _name(op):
    return getattr(op, "name", type(op).__name__)


def _blocks(graph):
    """`(residual, ends)`: residual sites `[(add node, branch index)]` and
    the output node of every block `[node]`, both in model order."""
    residual, regions, end_signatures = [], set(), set()
    outputs = []
    for node in graph.nodes:
        found = _residual(graph, node)
        if found is None:
            continue
        index, _, region = found
        residual.append((node, index))
        regions |= region
        end = _branch_end(graph, node.input_tensors[index])
        if end is not None:
            end_signatures.add(_signature(graph, end))
        outputs.append(_block_output(graph, node))
    plain = []
    if residual:
        # Blocks without an Add: outside every residual block, ending as
        # the residual branches end.
        for node in graph.nodes:
            if (len(node.outputs) != 1 or not _is_image(node.outputs[0])
                    or id(node.outputs[0]) in regions
                    or _is_add(node.operation)):
                continue
            if _signature(graph, node) in end_signatures:
                plain.append(node)
    else:
        # A plain stack: after every (non-depthwise) convolution unit.
        for node in graph.nodes:
            op = node.operation
            if (not _is_conv(op) or isinstance(op, _DEPTHWISE)
                    or isinstance(op, keras.layers.Dense)
                    or len(node.outputs) != 1
                    or not _is_image(node.outputs[0])):
                continue
            end = _unit_end(graph, node)
            if end is not None and _is_image(end.outputs[0]):
                plain.append(end)
    ends = sorted({id(n): n for n in outputs + plain}.values(),
                  key=lambda n: graph.position[id(n.outputs[0])])
    return residual, plain, ends


def _model_sites(graph, where, names_left):
    """`[(site, key)]` for the nodes of `graph` (nested models excluded),
    `key` being `("before", layer, index)` or `("after", layer)`."""
    model = graph.model.name
    found = []

    def after(node, kind):
        tensor = node.outputs[0]
        site = Site(kind, model, _name(node.operation), None,
                    tuple(tensor.shape))
        found.append((graph.position[id(tensor)], site,
                      ("after", node.operation)))

    if where == "blocks":
        residual, plain, _ = _blocks(graph)
        for node, index in residual:
            tensor = node.input_tensors[index]
            producer = graph.producer.get(id(tensor))
            site = Site("residual", model, _name(node.operation),
                        _name(producer.operation) if producer else None,
                        tuple(tensor.shape))
            found.append((graph.position[id(node.outputs[0])], site,
                          ("before", node.operation, index)))
        for node in plain:
            after(node, "block")
    elif where == "stages":
        _, _, ends = _blocks(graph)
        for i, node in enumerate(ends):
            shape = tuple(node.outputs[0].shape)
            if shape[1] is None or shape[2] is None:
                validation.fail(
                    _CALLER, "where", where,
                    "'blocks' or a predicate for a model whose heights and "
                    f"widths are unknown (layer {_name(node.operation)!r} "
                    f"of {model!r} outputs {shape}); for 'stages' build "
                    "the model with a fixed input shape, e.g. "
                    "input_shape=(224, 224, 3)")
            following = ends[i + 1] if i + 1 < len(ends) else None
            if (following is None
                    or tuple(following.outputs[0].shape)[1:3] != shape[1:3]):
                after(node, "stage")
    else:
        for node in graph.nodes:
            op = node.operation
            if isinstance(op, keras.layers.InputLayer):
                continue
            if callable(where):
                chosen = bool(where(op))
            else:
                chosen = _name(op) in where
                names_left.discard(_name(op))
            if not chosen:
                continue
            if len(node.outputs) != 1 or not _is_image(node.outputs[0]):
                shapes = [tuple(t.shape) for t in node.outputs]
                validation.fail(
                    _CALLER, "where", where,
                    "layers whose output is (batch, height, width, "
                    f"channels) with known channels; layer {_name(op)!r} "
                    f"of {model!r} outputs {shapes}: leave it out")
            after(node, "layer")
    return found


def _functional(model, argument="model"):
    """A functional view of `model` (itself, or a Sequential's graph)."""
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError):
            inputs = outputs = None
        if not inputs:
            validation.fail(
                _CALLER, argument, model,
                "a Sequential model with a known input: start it with "
                "keras.Input(shape) (or call model.build(input_shape))")
        if len(inputs) == 1:
            inputs = inputs[0]
        if len(outputs) == 1:
            outputs = outputs[0]
        return keras.Model(inputs, outputs, name=model.name)
    if isinstance(model, Functional):
        return model
    validation.fail(
        _CALLER, argument, model,
        "a functional or Sequential keras.Model (e.g. from "
        "keras.applications, keras_attn.models or keras.Model(inputs, "
        "outputs)); a subclassed model's graph lives in its Python call() "
        "and cannot be rebuilt: build it functionally, or call keras_attn "
        "layers inside its call()")


def _plan(model, where, names_left, argument="model"):
    """Every site of `model` and of its nested models, in model order, as
    `[(site, key)]`."""
    view = _functional(model, argument)
    graph = _Graph(view)
    found = _model_sites(graph, where, names_left)
    for node in graph.nodes:
        op = node.operation
        if isinstance(op, (Functional, keras.Sequential)):
            position = graph.position[id(node.outputs[0])] - 0.5
            for site, key in _plan(op, where, names_left, "model"):
                found.append((position, site, key))
    found.sort(key=lambda item: item[0])
    unique, seen = [], set()
    for _, site, key in found:
        ident = (key[0], id(key[1]), *key[2:])
        if ident not in seen:
            seen.add(ident)
            unique.append((site, key))
    return unique


def _check_where(where):
    if isinstance(where, str):
        return validation.check_choice(_CALLER, "where", where, WHERE)
    if isinstance(where, (list, tuple, set)) and where and all(
            isinstance(n, str) for n in where):
        return tuple(where)
    if callable(where):
        return where
    validation.fail(_CALLER, "where", where,
                    f"one of {list(WHERE)}, a predicate layer -> bool, or a "
                    "non-empty list of layer names")


def attention_sites(model, where="blocks"):
    """Where `add_attention(model, where=where)` would put modules.

    Args:
        model: a functional or Sequential `keras.Model`.
        where: `"blocks"`, `"stages"`, a predicate `layer -> bool` or a
            list of layer names (see `add_attention`).

    Returns:
        A list of `Site(kind, model, layer, branch, shape)` in model order
        (see `Site`); empty when `where` matches nothing.

    Example:
    >>> import keras
    >>> from keras_attn.models.retrofit import attention_sites
    >>> base = keras.applications.ResNet50(weights=None, include_top=False,
    ...                                    input_shape=(32, 32, 3))
    >>> sites = attention_sites(base, "blocks")
    >>> len(sites), sites[0].kind, sites[0].layer, sites[0].branch
    (16, 'residual', 'conv2_block1_add', 'conv2_block1_3_bn')
    >>> [site.layer for site in attention_sites(base, "stages")]
    ['conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out',
     'conv5_block3_out']
    """
    where = _check_where(where)
    names_left = set(where) if isinstance(where, tuple) else set()
    return [site for site, _ in _plan(model, where, names_left)]


def _tag(attention):
    """Short name for layer names: `se`, `cbam`, ... or the class name."""
    if attention is True:
        return "se"
    if isinstance(attention, str):
        return attention.lower()
    if isinstance(attention, type):
        cls = attention
    elif isinstance(attention, keras.layers.Layer):
        cls = type(attention)
    else:
        name = getattr(attention, "__name__", "")
        return name.lower() if name.isidentifier() else "attention"
    return registered_name(cls) or cls.__name__.lower()


def _is_factory_spec(attention):
    return (attention is True or isinstance(attention, str)
            or isinstance(attention, keras.layers.Layer)
            or (isinstance(attention, type)
                and issubclass(attention, keras.layers.Layer)))


def _check_attention(attention, layer_kwargs):
    if attention is None or attention is False:
        validation.fail(_CALLER, "attention", attention,
                        f"one of {available_attentions()}, a Layer class "
                        "or instance, or a callable channels -> Layer")
    if _is_factory_spec(attention):
        try:
            get_attention(attention, **layer_kwargs)
        except (ValueError, TypeError) as error:
            validation.fail(
                _CALLER, "attention", attention,
                f"one of {available_attentions()}, a Layer class or "
                "instance, or a callable channels -> Layer, with "
                f"constructor arguments it takes ({error})")
        return
    if not callable(attention):
        validation.fail(_CALLER, "attention", attention,
                        f"one of {available_attentions()}, a Layer class "
                        "or instance, or a callable channels -> Layer")


class _Rebuilder:
    """Clones models layer by layer, copying weights and inserting gates."""

    def __init__(self, plan, attention, layer_kwargs, gate_initializer,
                 used_names):
        self.before = collections.defaultdict(dict)
        self.after = {}
        for site, key in plan:
            if key[0] == "before":
                self.before[id(key[1])][key[2]] = site
            else:
                self.after[id(key[1])] = site
        self.attention = attention
        self.layer_kwargs = layer_kwargs
        self.gate_initializer = gate_initializer
        self.tag = _tag(attention)
        self.used = used_names
        self.inserted = []
        self.original = {}  # id(clone) -> original

    def _unique(self, base):
        name, i = f"{base}_{self.tag}", 1
        while name in self.used:
            name = f"{base}_{self.tag}_{i}"
            i += 1
        self.used.add(name)
        return name

    def _attention_layer(self, channels, dtype):
        if _is_factory_spec(self.attention):
            kwargs = {"name": self.tag, **self.layer_kwargs}
            if dtype is not None:
                kwargs.setdefault("dtype", dtype)
            return get_attention(self.attention, **kwargs)
        layer = self.attention(channels, **self.layer_kwargs)
        if not isinstance(layer, keras.layers.Layer):
            validation.fail(_CALLER, "attention", self.attention,
                            "a callable returning a keras.layers.Layer; "
                            f"it returned {layer!r}")
        return layer

    def gate(self, tensor, site, base):
        history = getattr(tensor, "_keras_history", None)
        producer = history[0] if history else None
        dtype = getattr(producer, "dtype_policy", None)
        shape = tuple(tensor.shape)
        try:
            inner = self._attention_layer(shape[-1], dtype)
            gate = IdentityGate(inner,
                                gate_initializer=self.gate_initializer,
                                name=self._unique(base), dtype=dtype)
            if gate.returns_maps:
                # Maps stay in the graph for `attention_model` and `viz`.
                out = gate(tensor, return_attention=True)[0]
            else:
                out = gate(tensor)
        except (ValueError, TypeError) as error:
            where = (f"the residual branch of {site.layer!r}"
                     if site.kind == "residual"
                     else f"the output of {site.layer!r}")
            validation.fail(
                _CALLER, "attention", self.attention,
                f"an attention that takes {where} in {site.model!r}, of "
                f"shape {shape} ({_channels_note(shape)}); it failed with: "
                f"{error}. Pick another attention or `layer_kwargs`, or "
                "leave this layer out with a predicate `where`")
        self.inserted.append((gate.name, site))
        return out

    def clone_layer(self, layer):
        if isinstance(layer, (Functional, keras.Sequential)):
            clone = self.rebuild(layer)
        else:
            try:
                clone = type(layer).from_config(layer.get_config())
            except Exception as error:
                validation.fail(
                    _CALLER, "model", f"layer {layer.name!r} "
                    f"({type(layer).__name__})",
                    "layers that can be re-created from their get_config() "
                    "(registered with keras.saving."
                    "register_keras_serializable and with a complete "
                    f"get_config); re-creating it failed with: {error}")
            self._pairs.append((layer, clone))
        self.original[id(clone)] = layer
        return clone

    def call_layer(self, layer, *args, **kwargs):
        original = self.original.get(id(layer), layer)
        sites = self.before.get(id(original))
        if sites:
            flat = keras.tree.flatten((args, kwargs))
            tensors = [i for i, x in enumerate(flat)
                       if isinstance(x, keras.KerasTensor)]
            for index, site in sites.items():
                position = tensors[index]
                base = site.layer[:-len("_add")] if site.layer.endswith(
                    "_add") else site.layer
                flat[position] = self.gate(flat[position], site, base)
            args, kwargs = keras.tree.pack_sequence_as((args, kwargs), flat)
        outputs = layer(*args, **kwargs)
        site = self.after.get(id(original))
        if site is not None:
            outputs = self.gate(outputs, site, site.layer)
        return outputs

    def rebuild(self, model):
        view = _functional(model)
        saved_pairs = getattr(self, "_pairs", None)
        self._pairs = []
        clone = keras.models.clone_model(
            view, clone_function=self.clone_layer,
            call_function=self.call_layer)
        for layer, new in self._pairs:
            if getattr(layer, "weights", None):
                new.set_weights(layer.get_weights())
        self._pairs = saved_pairs
        return clone


def _channels_note(shape):
    return f"{shape[-1]} channels" if len(shape) == 4 else f"rank {len(shape)}"


def _all_names(model, names):
    for layer in model.layers:
        names.add(layer.name)
        if isinstance(layer, (Functional, keras.Sequential)):
            _all_names(layer, names)
    return names


def add_attention(model, attention="se", where="blocks", *,
                  gate_initializer="zeros", name=None, **layer_kwargs):
    """A copy of `model` with attention modules that start as the identity.

    The model is rebuilt layer by layer (every weight copied; the original
    is left untouched) with an attention module inserted at each place
    `where` selects, wrapped in `keras_attn.layers.IdentityGate`:
    `y = x + g * (A(x) - x)` with a learnable scalar `g` starting at 0, so
    the new model's outputs equal the old one's until fine-tuning moves
    `g`. Modules are named `{block}_{tag}` after the layer they follow
    (`conv2_block1_se` before ResNet50's `conv2_block1_add`,
    `block_1_project_BN_se` after MobileNetV2's `block_1_project_BN`),
    `tag` being the registry name (`se`, `cbam`, ...) or the class name,
    and are called with `return_attention=True` when they support it, so
    `keras_attn.models.attention_model` and `keras_attn.viz` see their maps.
    Each module takes the dtype policy of the layer it follows (a
    `mixed_float16` model gets `mixed_float16` modules, with float32 maps).

    Residual blocks get the module on their residual branch just before the
    `Add` (SE and CBAM papers, Fig. 3), found from the graph; see the
    module docstring for how blocks and stages are found, and
    `attention_sites` to list the places without rebuilding.

    Args:
        model: a functional or Sequential `keras.Model` (with a known input
            shape); nested functional/Sequential models are rebuilt too.
        attention: anything `keras_attn.layers.get_attention` accepts:
            `"se"`, `"cbam"`, `"channel"`, `"spatial"`, `True` (SE), a layer
            class, or a layer instance used as a template; or a callable
            `attention(channels, **layer_kwargs) -> Layer` (like timm's
            `attn_layer`). The layer must keep its input's shape.
        where: `"blocks"` (every block, default), `"stages"` (the end of
            every resolution stage), a predicate `where(layer) -> bool`
            (after every matching layer) or a list of layer names.
        gate_initializer: initializer of each module's scalar gate.
            `"zeros"` (default) makes the new model compute exactly what
            `model` computes; `"ones"` inserts the bare attention.
        name: the new model's name. Defaults to `"{model.name}_{tag}"`.
        **layer_kwargs: constructor arguments of every attention layer,
            e.g. `reduction=16` (`name` is the model's: modules are named
            after the layer they follow).

    Returns:
        A functional `keras.Model` with the same inputs and outputs,
        saveable as `.keras` and loadable with `safe_mode=True`.

    Raises:
        ValueError: for a subclassed model or a Sequential one without an
            input shape (`model`), an unknown attention or arguments it does
            not take (`attention`), a `where` that matches nothing or
            selects a layer whose output is not an image batch (`where`),
            an attention that cannot take a selected tensor's channels or
            changes its shape (`attention`), or a layer that cannot be
            re-created from its config (`model`).

    Example:
    >>> import keras
    >>> import numpy as np
    >>> import keras_attn
    >>> base = keras.applications.MobileNetV2(
    ...     (32, 32, 3), alpha=0.35, weights=None, classes=10)
    >>> model = keras_attn.models.add_attention(base, "se")
    >>> sum(type(layer).__name__ == "IdentityGate" for layer in model.layers)
    17
    >>> images = np.random.default_rng(0).random((2, 32, 32, 3), "float32")
    >>> before = base.predict(images, verbose=0)
    >>> bool(np.abs(model.predict(images, verbose=0) - before).max() < 1e-5)
    True
    """
    _check_attention(attention, layer_kwargs)
    where = _check_where(where)
    names_left = set(where) if isinstance(where, tuple) else set()
    plan = _plan(model, where, names_left)
    if names_left:
        validation.fail(_CALLER, "where", list(where),
                        f"names of layers of {model.name!r}; not found: "
                        f"{sorted(names_left)}")
    if not plan:
        validation.fail(
            _CALLER, "where", where,
            f"a choice that matches at least one layer of {model.name!r} "
            "with an image-batch output (batch, height, width, channels): "
            "no residual block, convolution unit or matching layer was "
            "found; pass a predicate or a list of layer names to choose "
            "the places yourself (see keras_attn.models.retrofit."
            "attention_sites)")
    rebuilder = _Rebuilder(plan, attention, layer_kwargs, gate_initializer,
                           _all_names(model, set()))
    rebuilt = rebuilder.rebuild(model)
    if name is None:
        name = f"{model.name}_{rebuilder.tag}"
    return keras.Model(rebuilt.input, rebuilt.output, name=name)
