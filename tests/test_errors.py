"""Bad input fails early with an error that says what and where."""
import re

import numpy as np
import pytest

import deepgpu as dg


def names_both(exc_info, a, b):
    msg = str(exc_info.value)
    for s in (a, b):
        assert str(tuple(s)) in msg, f"{tuple(s)} not named in: {msg}"


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("sa,sb,kw", [
    ((2, 3), (4, 5), {}),
    ((2, 3), (2, 3), {}),
    ((2, 3), (2, 3), {"transpose_a": True, "transpose_b": True}),
    ((4, 2, 3), (4, 4, 5), {}),
    ((2, 2, 3), (3, 3, 4), {}),  # batch axes that do not broadcast
    ((3,), (4, 2), {}),
])
def test_matmul_names_both_shapes(backend, sa, sb, kw):
    with pytest.raises(ValueError) as e:
        dg.matmul(dg.ones(sa), dg.ones(sb), **kw)
    msg = str(e.value)
    assert "matmul" in msg
    # A 1-D operand is shown as the row vector it becomes.
    for s in (sa if len(sa) > 1 else (1,) + sa, sb):
        assert str(tuple(s)) in msg, msg


def test_matmul_operator_and_scalar(backend):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 3\)"):
        dg.ones((2, 3)) @ dg.ones((2, 3))
    with pytest.raises(ValueError, match="rank"):
        dg.matmul(dg.ones(()), dg.ones((3,)))


@pytest.mark.parametrize("xs,ks,kw", [
    ((1, 5, 5, 3), (3, 3, 2, 4), {}),                       # channels differ
    ((1, 2, 2, 3), (3, 3, 3, 4), {}),                       # window larger than the input
    ((1, 5, 3, 1), (2, 2, 1, 1), {"dilation_rate": 3}),     # dilated window too large
])
def test_conv2d_names_both_shapes(backend, xs, ks, kw):
    with pytest.raises(ValueError) as e:
        dg.conv2d(dg.ones(xs), dg.ones(ks), **kw)
    names_both(e, xs, ks)


def test_conv2d_rank_errors(backend):
    with pytest.raises(ValueError, match=r"4-D.*\(5, 5\)"):
        dg.conv2d(dg.ones((5, 5)), dg.ones((3, 3, 3, 4)))
    with pytest.raises(ValueError, match=r"kernel.*\(3, 3, 3\)"):
        dg.conv2d(dg.ones((1, 5, 5, 3)), dg.ones((3, 3, 3)))


def test_conv_args_cache_keeps_checking_bad_arguments(backend):
    """ops._conv_args remembers checked (strides, padding, dilation_rate): a bad set still fails after
    good ones were kept, and a kept set gives the same geometry as a fresh check."""
    from deepgpu import ops
    x, k = dg.ones((1, 6, 6, 2)), dg.ones((3, 3, 2, 4))
    y = ops.conv2d_bias_act(x, k, None, "relu", (2, 2), "SAME", (1, 1))
    assert ops._conv_args((2, 2), "SAME", (1, 1)) == ((2, 2), "same", (1, 1))
    assert y.shape == ops.conv2d_bias_act(x, k, None, "relu", (2, 2), "same", (1, 1)).shape == (1, 3, 3, 4)
    for strides, padding, dilation, match in [((2, 2), "full", (1, 1), "padding must be 'valid' or 'same'"),
                                              ((0, 1), "same", (1, 1), "must be positive"),
                                              ((2, 2), "same", (2, 2), "strides > 1 together"),
                                              ((1, 2, 3), "same", (1, 1), "strides must be an int or a pair")]:
        for _ in range(2):  # the failed check is not kept either
            with pytest.raises(ValueError, match=match):
                ops.conv2d_bias_act(x, k, None, "relu", strides, padding, dilation)
    with pytest.raises(TypeError):  # a float is not a pair, even after (1, 1) with "valid" was kept
        ops._conv_args(1.0, "valid", (1, 1))


def test_conv2d_transpose_names_both_shapes(backend):
    with pytest.raises(ValueError) as e:
        dg.conv2d_transpose(dg.ones((1, 5, 5, 3)), dg.ones((3, 3, 3, 4)))
    names_both(e, (1, 5, 5, 3), (3, 3, 3, 4))
    with pytest.raises(ValueError, match="output_shape"):
        dg.conv2d_transpose(dg.ones((1, 5, 5, 3)), dg.ones((3, 3, 2, 3)), output_shape=(1, 4, 4, 2))


@pytest.mark.parametrize("sa,sb", [((2, 3), (3, 2)), ((4,), (3,)), ((2, 1, 3), (2, 4))])
@pytest.mark.parametrize("op", ["add", "subtract", "multiply", "divide", "maximum", "pow"])
def test_broadcast_names_both_shapes(backend, op, sa, sb):
    with pytest.raises(ValueError) as e:
        getattr(dg, op)(dg.ones(sa), dg.ones(sb))
    names_both(e, sa, sb)
    assert op in str(e.value)


def test_broadcast_to_names_both_shapes(backend):
    with pytest.raises(ValueError) as e:
        dg.broadcast_to(dg.ones((2, 3)), (4, 3))
    names_both(e, (2, 3), (4, 3))
    with pytest.raises(ValueError) as e:
        dg.broadcast_to(dg.ones((2, 3)), (3,))
    names_both(e, (2, 3), (3,))


def test_where_names_shapes(backend):
    with pytest.raises(ValueError) as e:
        dg.where(dg.tensor([True, False, True]), dg.ones((2,)), dg.ones((2,)))
    assert "(3,)" in str(e.value) and "(2,)" in str(e.value)


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (3, 2)], 0), ([(2, 3), (2,)], 0), ([(2, 3), (3, 3)], 1)])
def test_concat_names_the_shapes(backend, shapes, axis):
    with pytest.raises(ValueError) as e:
        dg.concat([dg.ones(s) for s in shapes], axis=axis)
    for s in shapes:
        assert str(s) in str(e.value)


def test_stack_and_empty_lists(backend):
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(3, 2)")):
        dg.stack([dg.ones((2, 3)), dg.ones((3, 2))])
    with pytest.raises(ValueError):
        dg.concat([])
    with pytest.raises(ValueError):
        dg.stack([])


def test_other_shape_errors(backend):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        dg.reshape(dg.ones((2, 3)), (4, 2))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        dg.dense(dg.ones((2, 3)), dg.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        dg.softmax_cross_entropy(dg.ones((2, 3)), dg.ones((2, 4)))
    with pytest.raises(ValueError, match="rank"):
        dg.pad(dg.ones((2, 3)), [[1, 1]])
    with pytest.raises(ValueError, match="axis 2"):
        dg.softmax(dg.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="size 3"):
        dg.squeeze(dg.ones((2, 3)), 1)
    with pytest.raises(IndexError, match="out of range"):
        dg.gather(dg.ones((2, 3)), [5])
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        dg.ones((2, 3))[0, 7]


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", ["float128", "banana", "complex64", "str", "object", "float8"])
def test_unknown_dtype_is_value_error(backend, dtype):
    with pytest.raises(ValueError, match="dtype"):
        dg.tensor([1.0], dtype=dtype)
    with pytest.raises(ValueError, match="dtype"):
        dg.zeros((2,), dtype=dtype)
    with pytest.raises(ValueError, match="dtype"):
        dg.ones((2,)).astype(dtype)


def test_unknown_dtype_lists_valid_ones(backend):
    with pytest.raises(ValueError) as e:
        dg.tensor([1.0], dtype="banana")
    assert "float32" in str(e.value) and "int32" in str(e.value)


@pytest.mark.parametrize("data", ["abc", ["a", "b"], {"a": 1}, None, object(), [1 + 2j], [[1, 2], [3]],
                                  np.array(["x"]), [None, 1.0]])
def test_non_numeric_data_is_type_error(backend, data):
    with pytest.raises(TypeError):
        dg.tensor(data)


@pytest.mark.parametrize("other", ["a", None, {"x": 1}])
def test_non_numeric_operand_is_type_error(backend, other):
    with pytest.raises(TypeError):
        dg.ones((2,)) + other


@pytest.mark.parametrize("shape", ["abc", 2.5j, [2, "x"]])
def test_bad_shape_is_type_error(backend, shape):
    with pytest.raises(TypeError, match="shape"):
        dg.zeros(shape)


# --------------------------------------------------------------- padding

@pytest.mark.parametrize("padding", ["full", "causal", "", None, 1])
def test_bad_padding_is_value_error(backend, padding):
    x = dg.ones((1, 4, 4, 1))
    with pytest.raises(ValueError, match="padding"):
        dg.conv2d(x, dg.ones((3, 3, 1, 1)), padding=padding)
    with pytest.raises(ValueError, match="padding"):
        dg.max_pool2d(x, 2, padding=padding)
    with pytest.raises(ValueError, match="padding"):
        dg.avg_pool2d(x, 2, padding=padding)
    with pytest.raises(ValueError, match="padding"):
        dg.conv2d_transpose(x, dg.ones((3, 3, 1, 1)), padding=padding)


def test_padding_is_case_insensitive(backend):
    assert dg.conv2d(dg.ones((1, 4, 4, 1)), dg.ones((3, 3, 1, 1)), padding="SAME").shape == (1, 4, 4, 1)


def test_bad_strides_and_dilation(backend):
    x, k = dg.ones((1, 5, 5, 1)), dg.ones((3, 3, 1, 1))
    with pytest.raises(ValueError, match="strides"):
        dg.conv2d(x, k, strides=0)
    with pytest.raises(ValueError, match="strides"):
        dg.conv2d(x, k, strides=(1, 1, 1))
    with pytest.raises(ValueError, match="dilation"):
        dg.conv2d(x, k, dilation_rate=-1)


# --------------------------------------------------------------- pooling

@pytest.mark.parametrize("pool", [dg.max_pool2d, dg.avg_pool2d])
@pytest.mark.parametrize("xs,ps", [((1, 2, 2, 1), 3), ((1, 2, 5, 1), (3, 3)), ((2, 4, 4, 3), (2, 5))])
def test_pool_window_larger_than_input(backend, pool, xs, ps):
    with pytest.raises(ValueError) as e:
        pool(dg.ones(xs), ps)
    assert str(xs) in str(e.value)


@pytest.mark.parametrize("pool", [dg.max_pool2d, dg.avg_pool2d])
def test_pool_needs_nhwc(backend, pool):
    with pytest.raises(ValueError, match=r"4-D.*\(4, 4, 1\)"):
        pool(dg.ones((4, 4, 1)), 2)


def test_pool_window_larger_than_input_is_fine_with_same_padding(backend):
    assert dg.max_pool2d(dg.ones((1, 2, 2, 1)), 3, padding="same").shape == (1, 1, 1, 1)


# ----------------------------------------------------------------- other

def test_value_errors_for_bad_arguments(backend):
    with pytest.raises(ValueError, match="lo"):
        dg.clip(dg.ones(2), 1.0, 0.0)
    with pytest.raises(ValueError, match="rate"):
        dg.dropout(dg.ones(2), 1.0)
    with pytest.raises(ValueError, match="rate"):
        dg.dropout(dg.ones(2), -0.1)
    with pytest.raises(ValueError, match="activation"):
        dg.dense(dg.ones((2, 3)), dg.ones((3, 2)), activation="swishy")
    with pytest.raises(ValueError, match="perm"):
        dg.transpose(dg.ones((2, 3)), (0, 0))
