"""DLwJS ch. 5 / Deep Learning by Design ch. 6: transfer learning.

Train a base convnet on digits 0-4, truncate it below its head, freeze the
feature extractor, put a new head on it for digits 5-9, train the head, then
unfreeze and fine-tune with a small learning rate.
"""
import deepgpu as dg
from deepgpu import Model, datasets
from deepgpu.layers import Conv2D, Dense, Flatten, MaxPooling2D

from _common import budget

dg.set_seed(0)
(x_train, y_train), (x_test, y_test) = datasets.digits.load_data()
x_train, x_test = x_train[..., None] / 16.0, x_test[..., None] / 16.0
low, high = y_train < 5, y_train >= 5

base = dg.Sequential([
    Conv2D(16, 3, activation="relu", padding="same", input_shape=(8, 8, 1), name="conv_1"),
    MaxPooling2D(2, name="pool_1"),
    Conv2D(32, 3, activation="relu", padding="same", name="conv_2"),
    Flatten(name="features"),
    Dense(5, activation="softmax", name="old_head"),
])
base.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
base.fit(x_train[low], y_train[low], epochs=budget(10, 1), verbose=0)

# Truncate: a model from the base's input to its feature layer.
truncated = Model(base.inputs, base.get_layer("features").output)
for layer in truncated.layers:
    layer.trainable = False
head = Dense(5, activation="softmax", name="new_head")
model = Model(truncated.inputs, head(truncated.outputs[0]))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
frozen = [w.data_sync().copy() for w in base.get_layer("conv_1").weights]
model.fit(x_train[high], y_train[high] - 5, epochs=budget(10, 1), verbose=0)
unchanged = all((a == w.data_sync()).all() for a, w in zip(frozen, base.get_layer("conv_1").weights))
print("frozen layers unchanged while training the head:", unchanged)

# Fine-tune everything with a small learning rate.
for layer in truncated.layers:
    layer.trainable = True
model.compile(optimizer=dg.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x_train[high], y_train[high] - 5, epochs=budget(3, 1), verbose=0)
loss, acc = model.evaluate(x_test[y_test >= 5], y_test[y_test >= 5] - 5)
print(f"digits 5-9 after transfer and fine-tuning: accuracy {acc:.3f}")
