"""Deep Learning by Design, ch. 1: multi-label classifier (3 features, 7 independent sigmoid labels)."""
import deepgpu as dg
from deepgpu.layers import Dense

from _common import budget

dg.set_seed(0)
n = budget(2000, 400)
x = dg.random_normal((n, 3)).data_sync()
w = dg.random_normal((3, 7), seed=5).data_sync()
y = ((x @ w) > 0.3).astype("float32")  # each of the 7 labels on or off independently

model = dg.Sequential()
model.add(Dense(10, input_shape=(3,), activation="relu"))
model.add(Dense(10, activation="relu"))
model.add(Dense(7, activation="sigmoid"))
model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])

history = model.fit(x, y, epochs=budget(30, 5), batch_size=32, verbose=2)
print("first and last loss:", history.history["loss"][0], history.history["loss"][-1])
