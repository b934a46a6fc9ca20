"""Deep Learning by Design, ch. 1: a DNN binary classifier on 13 features."""
import deepgpu as dg
from deepgpu.layers import Activation, Dense

from _common import budget

dg.set_seed(0)
# Synthetic data: the class is whether a fixed weighted sum of the features is positive.
x = dg.random_normal((budget(2000, 400), 13)).data_sync()
w = dg.random_normal((13, 1), seed=1).data_sync()
y = ((x @ w) > 0).astype("float32")

model = dg.Sequential()
model.add(Dense(10, input_shape=(13,)))
model.add(Activation("relu"))
model.add(Dense(10))
model.add(Activation("relu"))
model.add(Dense(1))
model.add(Activation("sigmoid"))
model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
model.summary()

history = model.fit(x, y, epochs=budget(20, 5), batch_size=32, validation_split=0.2, verbose=2)
print("first and last loss:", history.history["loss"][0], history.history["loss"][-1])
