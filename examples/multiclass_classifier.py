"""Deep Learning by Design, ch. 1: a multi-class classifier (4 features, 5 classes, softmax)."""
import deepgpu as dg
from deepgpu.layers import Dense
from deepgpu.preprocessing import to_categorical

from _common import budget

dg.set_seed(0)
n = budget(2500, 500)
# Five Gaussian blobs in 4-D.
centers = dg.random_normal((5, 4), stddev=3.0, seed=2).data_sync()
labels = dg.random_uniform((n,), 0, 5, dtype="int32", seed=3).data_sync()
x = centers[labels] + dg.random_normal((n, 4), seed=4).data_sync()
y = to_categorical(labels, 5)

model = dg.Sequential()
model.add(Dense(10, input_shape=(4,), activation="relu"))
model.add(Dense(10, activation="relu"))
model.add(Dense(5, activation="softmax"))
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

history = model.fit(x, y, epochs=budget(30, 5), batch_size=32, verbose=2)
loss, acc = model.evaluate(x, y)
print(f"loss {loss:.4f}, accuracy {acc:.3f}")
