"""Deep Learning by Design, ch. 1: one functional model with two softmax heads."""
import deepgpu as dg
from deepgpu import Input, Model
from deepgpu.layers import Dense
from deepgpu.preprocessing import to_categorical

from _common import budget

dg.set_seed(0)
n = budget(2000, 400)
x = dg.random_normal((n, 3)).data_sync()
y1 = to_categorical((x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0) + (x[:, 2] > 1), 5)
y2 = to_categorical((x.sum(axis=1) > 0).astype(int), 2)

inputs = Input((3,))
x_ = Dense(10, activation="relu")(inputs)
x_ = Dense(10, activation="relu")(x_)
output1 = Dense(5, activation="softmax")(x_)
output2 = Dense(2, activation="softmax")(x_)
model = Model(inputs, [output1, output2])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.summary()

history = model.fit(x, [y1, y2], epochs=budget(30, 5), batch_size=32, verbose=2)
print("history keys:", sorted(history.history))
