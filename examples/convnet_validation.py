"""TF.js Layers chapter / DLwJS ch. 4: a convnet trained with validation data and an
on_epoch_end callback, on real digits resized to 28x28 with resize_bilinear."""
import deepgpu as dg
from deepgpu import datasets
from deepgpu.callbacks import LambdaCallback
from deepgpu.layers import Conv2D, Dense, Flatten, MaxPooling2D
from deepgpu.preprocessing import resize_bilinear, to_categorical

from _common import budget

dg.set_seed(0)
(x_train, y_train), (x_test, y_test) = datasets.digits.load_data()
n = budget(len(x_train), 256)
x_train = resize_bilinear(dg.tensor(x_train[:n, :, :, None] / 16.0), (28, 28))
x_test = resize_bilinear(dg.tensor(x_test[:, :, :, None] / 16.0), (28, 28))
y_train, y_test = to_categorical(y_train[:n], 10), to_categorical(y_test, 10)

model = dg.Sequential()
model.add(Conv2D(input_shape=(28, 28, 1), kernel_size=5, filters=8, strides=1,
                 activation="relu", kernel_initializer="VarianceScaling"))
model.add(MaxPooling2D(pool_size=(2, 2), strides=(2, 2)))
model.add(Conv2D(kernel_size=5, filters=16, strides=1, activation="relu",
                 kernel_initializer="VarianceScaling"))
model.add(MaxPooling2D(pool_size=(2, 2), strides=(2, 2)))
model.add(Flatten())
model.add(Dense(10, kernel_initializer="VarianceScaling", activation="softmax"))
model.compile(optimizer="adam", loss="categoricalCrossentropy", metrics=["accuracy"])

epochs = budget(10, 2)
report = LambdaCallback(on_epoch_end=lambda epoch, logs: print(
    f"Epoch {epoch + 1} of {epochs} completed: loss {logs['loss']:.4f}, val_accuracy {logs['val_accuracy']:.3f}"))
history = model.fit(x_train, y_train, batch_size=64, epochs=epochs,
                    validation_data=(x_test, y_test), callbacks=[report], verbose=0)
print("val_accuracy per epoch:", [round(a, 3) for a in history.history["val_accuracy"]])
