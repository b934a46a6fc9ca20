"""Ready-made networks: the seeds' image DNN and convnet, and a small ResNet."""
from __future__ import annotations

from . import layers as L
from .layers.base import Input
from .models import Model, Sequential


def dnn(input_shape=(28, 28, 1), num_classes=10, units=512, dropout=0.0, name="dnn"):
    """Flatten-512-512-10, the seeds' image classifier (669,706 params at 28x28)."""
    model = Sequential(name=name)
    model.add(L.Flatten(input_shape=tuple(input_shape)))
    model.add(L.Dense(units, activation="relu"))
    if dropout:
        model.add(L.Dropout(dropout))
    model.add(L.Dense(units, activation="relu"))
    if dropout:
        model.add(L.Dropout(dropout))
    model.add(L.Dense(num_classes, activation="softmax"))
    return model


def convnet(input_shape=(28, 28, 1), num_classes=10, name="convnet"):
    """The seed convnet: two 3x3 conv blocks, dropout, Dense 512 (594,922 params at 28x28x1).

    Inputs smaller than 28x28 use "same" padding so the blocks still fit
    (for the 8x8 digits).
    """
    h, w = input_shape[0], input_shape[1]
    pad = "valid" if min(h, w) >= 28 else "same"
    return Sequential([
        L.Conv2D(32, 3, activation="relu", padding=pad, input_shape=tuple(input_shape)),
        L.Conv2D(32, 3, activation="relu", padding=pad),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu", padding=pad),
        L.Conv2D(64, 3, activation="relu", padding=pad),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dropout(0.25),
        L.Dense(512, activation="relu"),
        L.Dropout(0.5),
        L.Dense(num_classes, activation="softmax"),
    ], name=name)


# Keras's default momentum (0.99) leaves the moving statistics half-way from their start
# after the ~80 steps of a short run, and inference then fails (10% on the digits after 2
# epochs); 0.9 settles them within a few dozen steps.
_BN_MOMENTUM = 0.9


def _residual_block(x, filters, stride):
    shortcut = x
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = L.BatchNormalization(momentum=_BN_MOMENTUM)(y)
    y = L.ReLU()(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = L.BatchNormalization(momentum=_BN_MOMENTUM)(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = L.BatchNormalization(momentum=_BN_MOMENTUM)(shortcut)
    return L.ReLU()(L.Add()([y, shortcut]))


def resnet(input_shape=(28, 28, 1), num_classes=10, widths=(16, 32, 64), name="resnet"):
    """A small residual network built with the functional API."""
    inputs = Input(shape=tuple(input_shape))
    x = L.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=_BN_MOMENTUM)(x)
    x = L.ReLU()(x)
    for i, f in enumerate(widths):
        x = _residual_block(x, f, 1 if i == 0 else 2)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, activation="softmax")(x)
    return Model(inputs, outputs, name=name)


MODELS = {"dnn": dnn, "cnn": convnet, "resnet": resnet}


# ----------------------------------------------------------- sequence models (issue 16)
def text_lstm(vocab_size, num_classes, sequence_length=None, embed_dim=64, units=64, dropout=0.3,
              name="text_lstm"):
    """Token ids (batch, sequence_length) -> Embedding (mask_zero: padded steps skipped) ->
    Bidirectional LSTM -> Dropout -> softmax over ``num_classes``; for TextVectorization's output."""
    inputs = Input(shape=(sequence_length,), dtype="int32")
    x = L.Embedding(vocab_size, embed_dim, mask_zero=True)(inputs)
    x = L.Bidirectional(L.LSTM(units))(x)
    x = L.Dropout(dropout)(x)
    outputs = L.Dense(num_classes, activation="softmax")(x)
    return Model(inputs, outputs, name=name)


def text_conv1d(vocab_size, num_classes, sequence_length=None, embed_dim=64, filters=128, kernel_size=5,
                dropout=0.3, name="text_conv1d"):
    """Token ids -> Embedding -> Conv1D (relu) -> GlobalMaxPooling1D -> Dropout -> softmax."""
    inputs = Input(shape=(sequence_length,), dtype="int32")
    x = L.Embedding(vocab_size, embed_dim)(inputs)
    x = L.Conv1D(filters, kernel_size, activation="relu")(x)
    x = L.GlobalMaxPooling1D()(x)
    x = L.Dropout(dropout)(x)
    outputs = L.Dense(num_classes, activation="softmax")(x)
    return Model(inputs, outputs, name=name)


def weather_lstm(input_shape=(14, 4), mean=None, variance=None, target_mean=0.0, target_std=1.0, units=32,
                 name="weather_lstm"):
    """Days (batch, window, features) -> Normalization (the training set's ``mean`` / ``variance``
    per feature) -> LSTM -> Dense(1) -> Rescaling to the target's units (``target_std`` and
    ``target_mean``), so the network itself works on standardized numbers."""
    inputs = Input(shape=tuple(input_shape))
    x = L.Normalization(mean=mean, variance=variance)(inputs) if mean is not None else inputs
    x = L.LSTM(units)(x)
    x = L.Dense(1)(x)
    outputs = L.Rescaling(float(target_std), offset=float(target_mean))(x)
    return Model(inputs, outputs, name=name)


SEQUENCE_MODELS = {("fortunes", "lstm"): text_lstm, ("fortunes", "conv1d"): text_conv1d,
                   ("seattle-weather", "lstm"): weather_lstm}
