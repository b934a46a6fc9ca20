"""TF.js Layers chapter: one Dense unit learns y = 2x - 1 and predicts about 9 for 5."""
import deepgpu as dg
from deepgpu.layers import Dense


dg.set_seed(0)
model = dg.Sequential()
model.add(Dense(units=1, input_shape=[1]))
model.compile(loss="meanSquaredError", optimizer="sgd")

xs = dg.tensor2d([1, 2, 3, 4], [4, 1])
ys = dg.tensor2d([1, 3, 5, 7], [4, 1])
model.fit(xs, ys, epochs=500, verbose=0)

model.predict(dg.tensor2d([5], [1, 1])).print()
prediction = model.predict(dg.tensor2d([5], [1, 1])).data_sync()[0, 0]
print(f"prediction for 5: {prediction:.3f} (the line gives 9)")
