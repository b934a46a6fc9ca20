#!/usr/bin/env node
// Builds and trains 1-D models in the real @tensorflow/tfjs, for tests/test_io_conv1d.py.
//
//   node conv1d_build.js OUT_DIR
//       For each model (conv1d: Conv1D same / valid / strided, MaxPooling1D, SpatialDropout1D,
//       AveragePooling1D, GlobalAveragePooling1D, Dense; pools: GlobalMaxPooling1D beside
//       GlobalAveragePooling1D in a functional model), fits it for a few epochs on seeded
//       random data (TF.js's own training), saves it to OUT_DIR/<name>/ (model.json +
//       weights.bin) and writes OUT_DIR/<name>/check.json {input, output}: an input and
//       TF.js's prediction for it, arrays as {"shape", "data"}.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function toJSONArray(t) {
  return {shape: t.shape, data: Array.from(t.dataSync())};
}

function saveHandler(dir) {
  return tf.io.withSaveHandler(async (artifacts) => {
    fs.mkdirSync(dir, {recursive: true});
    const data = tf.io.CompositeArrayBuffer.join(artifacts.weightData);
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(data));
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({
      modelTopology: artifacts.modelTopology, format: artifacts.format, generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy, weightsManifest: [{paths: ['./weights.bin'], weights: artifacts.weightSpecs}],
    }));
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  });
}

function conv1dModel() {
  const model = tf.sequential();
  model.add(tf.layers.conv1d({filters: 6, kernelSize: 3, padding: 'same', activation: 'relu', inputShape: [20, 3]}));
  model.add(tf.layers.maxPooling1d({poolSize: 2}));
  model.add(tf.layers.spatialDropout1d({rate: 0.2}));
  model.add(tf.layers.conv1d({filters: 5, kernelSize: 3, activation: 'tanh'}));  // TF.js cannot train a dilated one
  model.add(tf.layers.averagePooling1d({poolSize: 3, strides: 2, padding: 'same'}));
  model.add(tf.layers.conv1d({filters: 4, kernelSize: 2, strides: 2}));
  model.add(tf.layers.globalAveragePooling1d());
  model.add(tf.layers.dense({units: 3, activation: 'softmax'}));
  return {model, shape: [20, 3], classes: 3};
}

function poolsModel() {
  const input = tf.input({shape: [10, 4], name: 'series'});
  const c = tf.layers.conv1d({filters: 4, kernelSize: 3, padding: 'same'}).apply(input);
  const a = tf.layers.globalAveragePooling1d().apply(c);
  const m = tf.layers.globalMaxPooling1d().apply(c);
  const out = tf.layers.dense({units: 2, activation: 'softmax'}).apply(tf.layers.concatenate().apply([a, m]));
  return {model: tf.model({inputs: input, outputs: out}), shape: [10, 4], classes: 2};
}

async function main() {
  const outDir = process.argv[2];
  if (!outDir) throw new Error('usage: conv1d_build.js OUT_DIR');
  await tf.ready();
  let seed = 7;
  for (const [name, {model, shape, classes}] of Object.entries({conv1d: conv1dModel(), pools: poolsModel()})) {
    const x = tf.randomNormal([32, ...shape], 0, 1, 'float32', seed++);
    const labels = tf.randomUniform([32], 0, classes, 'int32', seed++);
    const y = tf.oneHot(labels, classes).toFloat();
    model.compile({optimizer: tf.train.adam(0.05), loss: 'categoricalCrossentropy'});
    await model.fit(x, y, {epochs: 3, batchSize: 8, verbose: 0});
    const dir = path.join(outDir, name);
    await model.save(saveHandler(dir));
    const input = tf.randomNormal([4, ...shape], 0, 1, 'float32', seed++);
    fs.writeFileSync(path.join(dir, 'check.json'),
                     JSON.stringify({input: toJSONArray(input), output: toJSONArray(model.predict(input))}));
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
