"""Tests for functional_dl.nn.recurrent and recurrent_cells.

Oracles: a NumPy float64 transcription of each cell's equations with an explicit Python
loop over sequences and time steps (padding and reverse included), central differences of
that loop for gradients, and torch.nn.LSTM/GRU/RNN (batch_first, packed sequences,
bidirectional) loaded with the same weights for outputs, final carries and gradients.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from functional_dl import nn
from functional_dl.nn.recurrent import RNN, Bidirectional, scan_cell
from functional_dl.nn.recurrent_cells import Cell, GRUCell, LSTMCell, SimpleRNNCell

RNG = np.random.default_rng(12)
KEY = jax.random.key(12)
B, T, F, H = 3, 5, 4, 3
LENGTHS = np.array([5, 2, 4])


# ------------------------------------------------------------------ NumPy oracles (float64)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _numpy_params(params):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params)


def _affine(p, x, h):
    """Input and hidden pre-activations, each (G·H,)."""
    return (x @ p["input"]["w"] + p["input"]["b"], h @ p["hidden"]["w"] + p["hidden"]["b"])


def numpy_lstm_step(p, carry, x):
    h, c = carry
    a_x, a_h = _affine(p, x, h)
    i, f, g, o = np.split(a_x + a_h, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    return (h, c), h


def numpy_gru_step(p, h, x):
    a_x, a_h = _affine(p, x, h)
    (xr, xz, xn), (hr, hz, hn) = np.split(a_x, 3), np.split(a_h, 3)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    h = (1 - z) * n + z * h
    return h, h


def numpy_simple_step(p, h, x, activation=np.tanh):
    a_x, a_h = _affine(p, x, h)
    h = activation(a_x + a_h)
    return h, h


def numpy_relu_step(p, h, x):
    return numpy_simple_step(p, h, x, lambda a: np.maximum(a, 0.0))


def numpy_scan(step, params, x, lengths=None, reverse=False, carry0=None, lstm=False):
    """(final carries stacked over the batch, outputs (B, T, H)), one sequence at a time."""
    p = _numpy_params(params)
    x = np.asarray(x, np.float64)
    batch, steps = x.shape[:2]
    hidden = p["hidden"]["w"].shape[0]
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    ys = np.zeros((batch, steps, hidden))
    finals = []
    for b in range(batch):
        if carry0 is None:
            zeros = np.zeros(hidden)
            carry = (zeros, zeros) if lstm else zeros
        else:
            carry = jax.tree.map(lambda part: np.asarray(part, np.float64)[b], carry0)
        order = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in order:
            carry, ys[b, t] = step(p, carry, x[b, t])
        finals.append(carry)
    final = (tuple(np.stack(part) for part in zip(*finals)) if lstm else np.stack(finals))
    return final, ys


# ------------------------------------------------------------------ layers against NumPy

CELLS = {  # name -> (cell constructor, NumPy step, LSTM carry?, torch module name, torch options)
    "lstm": (lambda: LSTMCell(H), numpy_lstm_step, True, "LSTM", {}),
    "gru": (lambda: GRUCell(H), numpy_gru_step, False, "GRU", {}),
    "simple_tanh": (lambda: SimpleRNNCell(H), numpy_simple_step, False, "RNN",
                    {"nonlinearity": "tanh"}),
    "simple_relu": (lambda: SimpleRNNCell(H, jax.nn.relu), numpy_relu_step, False, "RNN",
                    {"nonlinearity": "relu"}),
}


def _oracle(cell_name, reverse=False, last=False):
    _, step, lstm, _, _ = CELLS[cell_name]

    def oracle(params, x):
        _, ys = numpy_scan(step, params, x, reverse=reverse, lstm=lstm)
        return (ys[:, 0] if reverse else ys[:, -1]) if last else ys
    return oracle


def _bidirectional_oracle(params, x):
    forward, backward = _oracle("gru")(params["forward"], x), _oracle(
        "gru", reverse=True)(params["backward"], x)
    return np.concatenate([forward, backward], axis=-1)


LAYER_ENTRIES = {  # name -> (constructor, input shape, NumPy oracle)
    "rnn_lstm": (lambda: RNN(LSTMCell(H)), (B, T, F), _oracle("lstm")),
    "rnn_gru_reverse": (lambda: RNN(GRUCell(H), reverse=True), (B, T, F),
                        _oracle("gru", reverse=True)),
    "rnn_simple_last": (lambda: RNN(SimpleRNNCell(H), return_sequences=False), (B, T, F),
                        _oracle("simple_tanh", last=True)),
    "bidirectional_gru": (lambda: Bidirectional(RNN(GRUCell(H)),
                                                RNN(GRUCell(H), reverse=True)),
                          (B, T, F), _bidirectional_oracle),
}


@pytest.mark.parametrize("name", sorted(LAYER_ENTRIES))
def test_layers_match_numpy_with_init_shape_and_jit(name):
    make, input_shape, oracle = LAYER_ENTRIES[name]
    layer = make()
    out_shape, params = layer.init(KEY, (-1,) + input_shape[1:])
    x = RNG.normal(size=input_shape).astype(np.float32)
    y = layer.apply(params, x)
    assert out_shape == (-1,) + y.shape[1:] and y.dtype == jnp.float32
    np.testing.assert_allclose(y, oracle(params, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(layer.apply)(params, x), y, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ NumPy: lengths, reverse


VARIANTS = {  # name -> (reverse, lengths?, random initial carry?)
    "forward": (False, False, False),
    "reverse_carry": (True, False, True),
    "lengths_carry": (False, True, True),
    "lengths_reverse": (True, True, False),
}


def _random_carry(lstm, batch=B):
    parts = [RNG.normal(size=(batch, H)).astype(np.float32) for _ in range(2 if lstm else 1)]
    return tuple(parts) if lstm else parts[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("cell_name", ["lstm", "gru", "simple_tanh"])
def test_scan_matches_numpy_loop(cell_name, variant):
    make, step, lstm, _, _ = CELLS[cell_name]
    reverse, use_lengths, use_carry = VARIANTS[variant]
    cell = make()
    _, params = cell.init(KEY, (B, F))
    x = RNG.normal(size=(B, T, F)).astype(np.float32)
    lengths = LENGTHS if use_lengths else None
    carry0 = _random_carry(lstm) if use_carry else None
    carry, ys = scan_cell(cell, params, x, lengths=lengths, reverse=reverse,
                          initial_carry=carry0)
    want_carry, want_ys = numpy_scan(step, params, x, lengths, reverse, carry0, lstm)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 carry, want_carry)
    if use_lengths:  # padding outputs exact zeros
        assert not np.any(np.asarray(ys)[1, LENGTHS[1]:])
    layer_y = jax.jit(RNN(cell, reverse=reverse).apply)(params, x, lengths=lengths,
                                                        initial_carry=carry0)
    np.testing.assert_allclose(layer_y, ys, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_last_output_is_the_last_step_read(reverse):
    cell = GRUCell(H)
    layer = RNN(cell, reverse=reverse, return_sequences=False)
    out_shape, params = layer.init(KEY, (B, T, F))
    x = RNG.normal(size=(B, T, F)).astype(np.float32)
    y = layer.apply(params, x, lengths=LENGTHS)
    final, _ = numpy_scan(numpy_gru_step, params, x, LENGTHS, reverse)
    assert y.shape == out_shape == (B, H)
    np.testing.assert_allclose(y, final, rtol=1e-5, atol=1e-5)  # y_t = h_t


def test_cell_apply_is_one_step_and_initial_carry_is_zeros():
    cell = LSTMCell(H)
    out_shape, params = cell.init(KEY, (B, F))
    carry = cell.initial_carry((B,))
    assert out_shape == (B, H) and all(np.all(part == 0) and part.shape == (B, H)
                                       for part in carry)
    carry = _random_carry(True)
    x = RNG.normal(size=(B, F)).astype(np.float32)
    (h, c), y = cell.apply(params, carry, x)
    p = _numpy_params(params)
    for b in range(B):
        (want_h, want_c), _ = numpy_lstm_step(p, (carry[0][b], carry[1][b]), x[b])
        np.testing.assert_allclose(h[b], want_h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c[b], want_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y, h)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_gradients_match_central_differences_of_the_numpy_loop(cell_name):
    make, step, lstm, _, _ = CELLS[cell_name]
    with jax.enable_x64(True):
        cell = make()
        _, params = cell.init(KEY, (2, 2))
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)
        x = RNG.normal(size=(2, 3, 2))
        lengths, weights = np.array([3, 2]), RNG.normal(size=(2, 3, H))

        def numpy_loss(p):
            return float(np.sum(numpy_scan(step, p, x, lengths, True, lstm=lstm)[1] * weights))

        grads = jax.grad(lambda p: jnp.sum(scan_cell(cell, p, x, lengths=lengths,
                                                     reverse=True)[1] * weights))(params)
        leaves, treedef = jax.tree.flatten(_numpy_params(params))
        for index, (leaf, grad) in enumerate(zip(leaves, jax.tree.leaves(grads))):
            numeric = np.zeros_like(leaf)
            for position in np.ndindex(leaf.shape):
                shifted = []
                for delta in (1e-6, -1e-6):
                    moved = [a.copy() for a in leaves]
                    moved[index][position] += delta
                    shifted.append(numpy_loss(jax.tree.unflatten(treedef, moved)))
                numeric[position] = (shifted[0] - shifted[1]) / 2e-6
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ torch oracles


def _load_torch(torch, module, params, suffix=""):
    """Copy ``params`` into a torch RNN module (weights transposed, same gate order)."""
    with torch.no_grad():
        for part, kind in (("input", "ih"), ("hidden", "hh")):
            getattr(module, f"weight_{kind}_l0{suffix}").copy_(
                torch.from_numpy(np.asarray(params[part]["w"]).T.copy()))
            getattr(module, f"bias_{kind}_l0{suffix}").copy_(
                torch.from_numpy(np.asarray(params[part]["b"]).copy()))


def _torch_grads(module, suffix=""):
    return {part: {"w": getattr(module, f"weight_{kind}_l0{suffix}").grad.numpy().T,
                   "b": getattr(module, f"bias_{kind}_l0{suffix}").grad.numpy()}
            for part, kind in (("input", "ih"), ("hidden", "hh"))}


def _torch_run(torch, module, x, lengths):
    """(output (B, T, D·H), final carry as torch returns it) for x: float64 tensor."""
    rnn = torch.nn.utils.rnn
    if lengths is None:
        return module(x)
    packed = rnn.pack_padded_sequence(x, torch.from_numpy(lengths), batch_first=True,
                                      enforce_sorted=False)
    out, final = module(packed)
    return rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], final


def _assert_tree_close(actual, expected):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10),
                 actual, expected)


@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_matches_torch_outputs_final_carry_and_gradients(cell_name, use_lengths):
    torch = pytest.importorskip("torch")
    make, _, lstm, module_name, options = CELLS[cell_name]
    lengths = LENGTHS if use_lengths else None
    with jax.enable_x64(True):
        cell = make()
        _, params = cell.init(KEY, (B, F))
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)
        x = RNG.normal(size=(B, T, F))
        out_weights = RNG.normal(size=(B, T, H))
        carry_weights = RNG.normal(size=(2 if lstm else 1, B, H))

        def loss(params, x):
            carry, ys = scan_cell(cell, params, x, lengths=lengths)
            carry = jnp.stack(carry) if lstm else carry[None]
            return jnp.sum(ys * out_weights) + jnp.sum(carry * carry_weights), (carry, ys)

        (_, (carry, ys)), (grads, x_grad) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True)(params, x)

    module = getattr(torch.nn, module_name)(F, H, batch_first=True, **options).double()
    _load_torch(torch, module, params)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    out, final = _torch_run(torch, module, x_torch, lengths)
    final = torch.cat(final) if lstm else final  # (1 or 2, B, H)
    (torch.sum(out * torch.from_numpy(out_weights))
     + torch.sum(final * torch.from_numpy(carry_weights))).backward()
    _assert_tree_close(ys, out.detach().numpy())
    _assert_tree_close(carry, final.detach().numpy())
    _assert_tree_close(grads, _torch_grads(module))
    _assert_tree_close(x_grad, x_torch.grad.numpy())


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_bidirectional_matches_torch_with_packed_sequences(cell_name):
    torch = pytest.importorskip("torch")
    make, _, lstm, module_name, options = CELLS[cell_name]
    with jax.enable_x64(True):
        layer = Bidirectional(RNN(make()), RNN(make(), reverse=True))
        out_shape, params = layer.init(KEY, (-1, T, F))
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)
        x = RNG.normal(size=(B, T, F))
        out_weights = RNG.normal(size=(B, T, 2 * H))
        y, grads = jax.value_and_grad(lambda p: jnp.sum(
            layer.apply(p, x, lengths=LENGTHS) * out_weights))(params)
        y = layer.apply(params, x, lengths=LENGTHS)
        backward_carry, _ = scan_cell(make(), params["backward"], x, lengths=LENGTHS,
                                      reverse=True)

    assert out_shape == (-1, T, 2 * H)
    module = getattr(torch.nn, module_name)(F, H, batch_first=True, bidirectional=True,
                                            **options).double()
    _load_torch(torch, module, params["forward"])
    _load_torch(torch, module, params["backward"], "_reverse")
    out, final = _torch_run(torch, module, torch.from_numpy(x), LENGTHS)
    torch.sum(out * torch.from_numpy(out_weights)).backward()
    _assert_tree_close(y, out.detach().numpy())
    torch_backward_h = (final[0] if lstm else final)[1].detach().numpy()
    _assert_tree_close(backward_carry[0] if lstm else backward_carry, torch_backward_h)
    _assert_tree_close(grads, {"forward": _torch_grads(module),
                               "backward": _torch_grads(module, "_reverse")})


# ------------------------------------------------------------------ dtypes


def test_bfloat16_compute_with_float32_params():
    layer = RNN(LSTMCell(H, dtype=jnp.bfloat16))
    _, params = layer.init(KEY, (B, T, F))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    x = RNG.normal(size=(B, T, F)).astype(np.float32)
    y = jax.jit(layer.apply)(params, x, lengths=LENGTHS)
    assert y.dtype == jnp.bfloat16
    _, want = numpy_scan(numpy_lstm_step, params, x, LENGTHS, lstm=True)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=5e-2)
    _, half_params = RNN(GRUCell(H, param_dtype=jnp.bfloat16)).init(KEY, (B, T, F))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(half_params))


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def lstm_layer():
    layer = RNN(LSTMCell(H))
    return layer, layer.init(KEY, (B, T, F))[1]


@pytest.mark.parametrize("shape", [(T, F), (B, T, F + 1), (B, 1, T, F)])
def test_wrong_input_shape_names_the_layer_and_the_expected_shape(lstm_layer, shape):
    layer, params = lstm_layer
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\): x must have shape \(B, T, 4\)"):
        layer.apply(params, np.zeros(shape, np.float32))


def test_wrong_input_shape_at_init():
    with pytest.raises(ValueError, match=r"RNN\(GRUCell\): input_shape must be \(B, T, F\)"):
        RNN(GRUCell(H)).init(KEY, (T, F))
    with pytest.raises(ValueError, match="GRUCell: features must be an int >= 1"):
        GRUCell(0)
    with pytest.raises(TypeError, match="RNN: cell must be an nn.Cell"):
        RNN(jnp.tanh)


@pytest.mark.parametrize("lengths, error, message", [
    (np.array([5, 2]), ValueError, r"lengths must have shape \(3,\)"),
    (np.array([[5, 2, 4]]), ValueError, r"lengths must have shape \(3,\)"),
    (np.array([5, 0, 4]), ValueError, r"lengths must be in \[1, T\] = \[1, 5\]"),
    (np.array([6, 2, 4]), ValueError, r"lengths must be in \[1, T\] = \[1, 5\]"),
    (np.array([5.0, 2.0, 4.0]), TypeError, "lengths must hold integer"),
])
def test_bad_lengths_name_lengths(lstm_layer, lengths, error, message):
    layer, params = lstm_layer
    with pytest.raises(error, match=r"RNN\(LSTMCell\): " + message):
        layer.apply(params, np.zeros((B, T, F), np.float32), lengths=lengths)


def test_initial_carry_of_the_wrong_shape_names_initial_carry(lstm_layer):
    layer, params = lstm_layer
    carry = (np.zeros((B, H + 1), np.float32), np.zeros((B, H), np.float32))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\): initial_carry\[0\] has shape"):
        layer.apply(params, np.zeros((B, T, F), np.float32), initial_carry=carry)
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\): initial_carry differs"):
        layer.apply(params, np.zeros((B, T, F), np.float32), initial_carry=carry[0])


def test_bidirectional_rejects_directions_of_different_shapes():
    with pytest.raises(ValueError, match="Bidirectional: forward_rnn and backward_rnn"):
        Bidirectional(RNN(GRUCell(H)), RNN(GRUCell(H), reverse=True,
                                           return_sequences=False)).init(KEY, (B, T, F))


def test_a_hand_written_cell_scans_through_apply():
    def init(key, input_shape):
        return input_shape, {}

    def apply(params, carry, x_t):
        carry = carry + x_t  # running sum
        return carry, carry

    cell = Cell(init, apply, lambda batch_shape, dtype=None: jnp.zeros(batch_shape + (F,), dtype))
    x = RNG.normal(size=(B, T, F)).astype(np.float32)
    y = RNN(cell, reverse=True).apply({}, x, lengths=LENGTHS)
    want = np.zeros_like(x)
    for b, length in enumerate(LENGTHS):
        want[b, :length] = np.cumsum(x[b, :length][::-1], axis=0)[::-1]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ nesting


def test_rnn_nests_in_nn_serial_and_in_stax_serial():
    rnn = nn.RNN(nn.GRUCell(H), return_sequences=False)
    model = nn.serial(rnn, nn.Dense(2))
    out_shape, params = model.init(KEY, (-1, T, F))
    assert out_shape == (-1, 2) and list(params) == ["rnn_0", "dense_0"]
    x = RNG.normal(size=(B, T, F)).astype(np.float32)
    w, b = (np.asarray(params["dense_0"][name], np.float64) for name in ("w", "b"))
    want = _oracle("gru", last=True)(params["rnn_0"], x) @ w + b[None]
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-5, atol=1e-5)
    # stax passes rng=; stax.Dense broadcasts its bias by rank, which the strict config refuses
    stax_init, stax_apply = stax.serial(rnn, stax.Tanh)
    _, stax_params = stax_init(KEY, (B, T, F))
    np.testing.assert_allclose(stax_apply(stax_params, x, rng=KEY),
                               np.tanh(_oracle("gru", last=True)(stax_params[0], x)),
                               rtol=1e-5, atol=1e-5)


def test_vmap_over_groups_of_padded_batches_equals_each_group():
    layer = RNN(LSTMCell(H), reverse=True)
    _, params = layer.init(KEY, (B, T, F))
    x = RNG.normal(size=(2, B, T, F)).astype(np.float32)
    lengths = np.stack([LENGTHS, LENGTHS[::-1]])
    y = jax.vmap(lambda xs, ls: layer.apply(params, xs, lengths=ls))(x, lengths)
    for group in range(2):
        _, want = numpy_scan(numpy_lstm_step, params, x[group], lengths[group], True, lstm=True)
        np.testing.assert_allclose(y[group], want, rtol=1e-5, atol=1e-5)
