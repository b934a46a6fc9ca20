"""Deep Learning by Design, ch. 1: the image DNN (Flatten, Dense 512 x2, Dropout) on real digits."""
import deepgpu as dg
from deepgpu import datasets
from deepgpu.layers import Activation, Dense, Dropout, Flatten, ReLU
from deepgpu.preprocessing import to_categorical

from _common import budget

dg.set_seed(0)
(x_train, y_train), (x_test, y_test) = datasets.digits.load_data()
x_train, x_test = x_train / 16.0, x_test / 16.0
y_train, y_test = to_categorical(y_train, 10), to_categorical(y_test, 10)

model = dg.Sequential()
model.add(Flatten(input_shape=x_train.shape[1:]))
model.add(Dense(512))
model.add(Dropout(0.5))
model.add(ReLU())
model.add(Dense(512))
model.add(Dropout(0.5))
model.add(ReLU())
model.add(Dense(10))
model.add(Activation("softmax"))
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.summary()

model.fit(x_train, y_train, epochs=budget(20, 2), batch_size=32, validation_split=0.1, verbose=2)
loss, acc = model.evaluate(x_test, y_test)
print(f"test accuracy: {acc:.3f}")
