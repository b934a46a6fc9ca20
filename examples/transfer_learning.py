"""DLwJS ch. 5 (seed 002) / Deep Learning by Design ch. 6: transfer learning from a pretrained MobileNet.

Seed 002 loads a pretrained MobileNet published for TF.js, truncates it at a named layer
(conv_pw_13_relu), freezes it, puts a new head on it with apply(), trains the head, then
unfreezes the last layers, recompiles and fine-tunes. Nothing is downloaded here, so the
"pretrained" network is made first: deepgpu.applications.MobileNet (alpha 0.25, 32x32 input)
trained on digits 0-4 and published as TF.js does it, with uint8-quantized weights. The new
task is digits 5-9.
"""
import os
import tempfile

import numpy as np

import deepgpu as dg
from deepgpu import Model, datasets
from deepgpu.applications import MobileNet
from deepgpu.io import load_tfjs, save_tfjs
from deepgpu.layers import BatchNormalization, Dense, Flatten

from _common import budget

dg.set_seed(0)
(x_train, y_train), (x_test, y_test) = datasets.digits.load_data()


def images(x):
    """8x8 digits (0..16) as 32x32 RGB in [-1, 1], MobileNet's input range."""
    x = np.repeat(np.repeat(x / 8.0 - 1.0, 4, axis=1), 4, axis=2)
    return np.repeat(x[..., None], 3, axis=3).astype("float32")


x_train, x_test = images(x_train), images(x_test)
low, high = y_train < 5, y_train >= 5
n_quick = 100  # examples per task in quick mode (the tests)
xl, yl = x_train[low][:budget(None, n_quick)], y_train[low][:budget(None, n_quick)]
xh, yh = x_train[high][:budget(None, n_quick)], y_train[high][:budget(None, n_quick)] - 5

# 1. A "pretrained" MobileNet, published as a TF.js folder with uint8-quantized weights.
# (Keras's own top keeps a pooled [1, 1] map, which TF.js's pooling cannot: a Dense top instead.)
base = MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, pooling="avg", weights=None)
# Keras's MobileNet keeps BatchNormalization's momentum 0.99: its moving statistics need thousands
# of steps to catch up with the weights, more than this short pretraining has (inference would then
# see other statistics than training did). 0.9 lets them follow.
for lyr in base.layers:
    if isinstance(lyr, BatchNormalization):
        lyr.momentum = 0.9
top = Dense(5, activation="softmax", name="predictions")
pretrained = Model(base.inputs, top(base.outputs[0]), name="mobilenet_0.25_32")
pretrained.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
pretrained.fit(xl, yl, epochs=budget(16, 1), batch_size=32, verbose=0)
folder = os.path.join(tempfile.mkdtemp(prefix="deepgpu-transfer-"), "mobilenet")
_, acc_pre = pretrained.evaluate(x_test[y_test < 5], y_test[y_test < 5], verbose=0)
print(f"pretrained on digits 0-4: accuracy {acc_pre:.3f}")
save_tfjs(pretrained, folder, quantization="uint8")

# 2. Load it as seed 002 loads the published model, and truncate it at a named layer.
mobilenet = load_tfjs(folder)
print(f"pretrained network loaded from TF.js (uint8 weights): {mobilenet.name}, "
      f"{mobilenet.count_params()} parameters")
layer = mobilenet.get_layer("conv_pw_13_relu")
truncated = Model(mobilenet.inputs, layer.output, name="truncated_mobilenet")
for lyr in truncated.layers:
    lyr.trainable = False

# 3. A new head, put on the truncated base with apply().
new_head = dg.Sequential([
    Flatten(input_shape=tuple(truncated.outputs[0].shape[1:])),
    Dense(32, activation="relu", name="new_dense"),
    Dense(5, activation="softmax", name="new_softmax"),
], name="new_head")
model = Model(truncated.inputs, new_head.apply(truncated.outputs[0]), name="transfer")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
frozen = [w.data_sync().copy() for w in mobilenet.get_layer("conv1").weights]
model.fit(xh, yh, epochs=budget(20, 1), batch_size=32, verbose=0)
unchanged = all((a == w.data_sync()).all() for a, w in zip(frozen, mobilenet.get_layer("conv1").weights))
print("frozen layers unchanged while training the head:", unchanged)
_, acc_head = model.evaluate(x_test[y_test >= 5], y_test[y_test >= 5] - 5, verbose=0)
print(f"digits 5-9, new head on the frozen base: accuracy {acc_head:.3f}")

# 4. Unfreeze the last depthwise-separable block, recompile (trainability is read at compile
#    time) and fine-tune with a small learning rate.
unfrozen = [lyr.name for lyr in truncated.layers if lyr.name.endswith("_13") or "_13_" in lyr.name]
for lyr in truncated.layers:
    lyr.trainable = lyr.name in unfrozen
model.compile(optimizer=dg.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
before = [w.data_sync().copy() for w in mobilenet.get_layer("conv_pw_13").weights]
model.fit(xh, yh, epochs=budget(10, 1), batch_size=32, verbose=0)
moved = any((a != w.data_sync()).any() for a, w in zip(before, mobilenet.get_layer("conv_pw_13").weights))
print(f"unfrozen for fine-tuning: {', '.join(unfrozen)}; their weights moved: {moved}")
_, acc = model.evaluate(x_test[y_test >= 5], y_test[y_test >= 5] - 5, verbose=0)
print(f"digits 5-9 after transfer and fine-tuning: accuracy {acc:.3f}")
