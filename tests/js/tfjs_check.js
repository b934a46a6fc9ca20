#!/usr/bin/env node
// Runs the real @tensorflow/tfjs (pure JS, CPU backend) on TF.js Layers
// model folders, for tests/test_io_tfjs.py.
//
//   node tfjs_check.js predict MODEL_DIR INPUT_JSON OUTPUT_JSON [MODEL_DIR INPUT_JSON OUTPUT_JSON ...]
//       Loads MODEL_DIR/model.json and its shards with tf.loadLayersModel
//       (through tf.io.getModelArtifactsForJSON, the code path TF.js's own
//       http/file loaders use), predicts on INPUT_JSON and writes the result;
//       for each triple in turn.
//   node tfjs_check.js build OUT_DIR
//       Builds a Dense model, a Conv2D model, a functional model (Conv2D,
//       BatchNormalization, Add, Concatenate) and one that calls a nested
//       Sequential twice in TF.js, saves each with a
//       save handler to OUT_DIR/<name>/ (model.json + weights.bin, the layout
//       tfjs-node's file:// saver writes), and writes OUT_DIR/<name>/check.json
//       holding an input and TF.js's prediction for it.
//
// Arrays travel as JSON {"shape": [...], "data": [flat float32 values]}; a
// model with several inputs takes a list of them, one with several outputs
// gives a list.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function toJSONArray(t) {
  return {shape: t.shape, data: Array.from(t.dataSync())};
}

function fromJSONArray(obj) {
  return tf.tensor(obj.data, obj.shape, 'float32');
}

function dirHandler(dir) {
  const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  return {
    load: () => tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
      // As TF.js's http loader: specs of every group in order, each group's
      // paths read in order and concatenated.
      const specs = [];
      const buffers = [];
      for (const group of manifest) {
        specs.push(...group.weights);
        for (const p of group.paths) {
          const b = fs.readFileSync(path.join(dir, p));
          buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        }
      }
      return [specs, tf.io.concatenateArrayBuffers(buffers)];
    }),
  };
}

async function predict(modelDir, inputPath, outputPath) {
  const model = await tf.loadLayersModel(dirHandler(modelDir));
  const doc = JSON.parse(fs.readFileSync(inputPath, 'utf8'));
  const x = Array.isArray(doc) ? doc.map(fromJSONArray) : fromJSONArray(doc);  // a list: several inputs
  const y = model.predict(x);
  const out = Array.isArray(y) ? y.map(toJSONArray) : toJSONArray(y);
  fs.writeFileSync(outputPath, JSON.stringify(out));
}

function saveHandler(dir) {
  return tf.io.withSaveHandler(async (artifacts) => {
    fs.mkdirSync(dir, {recursive: true});
    const data = tf.io.CompositeArrayBuffer.join(artifacts.weightData);
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(data));
    const modelJSON = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy,
      weightsManifest: [{paths: ['./weights.bin'], weights: artifacts.weightSpecs}],
    };
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJSON));
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  });
}

function denseModel() {
  const model = tf.sequential();
  model.add(tf.layers.dense({units: 16, activation: 'relu', inputShape: [7]}));
  model.add(tf.layers.dense({units: 8, activation: 'tanh'}));
  model.add(tf.layers.dense({units: 3, activation: 'softmax'}));
  return {model, input: tf.randomNormal([5, 7], 0, 1, 'float32', 11)};
}

function convModel() {
  const model = tf.sequential();
  model.add(tf.layers.conv2d({filters: 4, kernelSize: 3, activation: 'relu', inputShape: [10, 10, 2]}));
  model.add(tf.layers.conv2d({filters: 6, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu'}));
  model.add(tf.layers.maxPooling2d({poolSize: 2}));
  model.add(tf.layers.flatten());
  model.add(tf.layers.dense({units: 5, activation: 'softmax'}));
  return {model, input: tf.randomNormal([3, 10, 10, 2], 0, 1, 'float32', 12)};
}

function functionalModel() {
  const input = tf.input({shape: [6, 6, 3]});
  const a = tf.layers.conv2d({filters: 4, kernelSize: 3, padding: 'same', useBias: false}).apply(input);
  const b = tf.layers.batchNormalization().apply(a);
  const c = tf.layers.conv2d({filters: 4, kernelSize: 1}).apply(input);
  const added = tf.layers.add().apply([tf.layers.reLU().apply(b), c]);
  const merged = tf.layers.concatenate().apply([added, input]);
  const pooled = tf.layers.globalAveragePooling2d({}).apply(merged);
  const output = tf.layers.dense({units: 3}).apply(pooled);
  const model = tf.model({inputs: input, outputs: output});
  return {model, input: tf.randomNormal([2, 6, 6, 3], 0, 1, 'float32', 14)};
}

function nestedModel() {
  // A Sequential used twice inside a functional model: TF.js numbers its calls 1 and 2.
  const inner = tf.sequential({layers: [tf.layers.dense({units: 4, activation: 'relu', inputShape: [3]}),
                                        tf.layers.dense({units: 3})]});
  const input = tf.input({shape: [3]});
  const twice = inner.apply(tf.layers.dense({units: 3}).apply(inner.apply(input)));
  const output = tf.layers.concatenate().apply([twice, input]);
  return {model: tf.model({inputs: input, outputs: output}), input: tf.randomNormal([4, 3], 0, 1, 'float32', 15)};
}

async function build(outDir) {
  const models = {dense: denseModel(), conv: convModel(), functional: functionalModel(), nested: nestedModel()};
  for (const [name, {model, input}] of Object.entries(models)) {
    // Move biases, BatchNormalization's beta/gamma and moving statistics off
    // their initial 0 and 1, so that a weight lost on the way shows.
    let seed = 20;
    for (const w of model.weights) {
      if (w.originalName.endsWith('/kernel')) continue;
      const positive = /gamma|variance/.test(w.originalName);
      w.write(tf.randomUniform(w.shape, positive ? 0.5 : -0.5, positive ? 1.5 : 0.5, 'float32', seed++));
    }
    const dir = path.join(outDir, name);
    await model.save(saveHandler(dir));
    const check = {input: toJSONArray(input), output: toJSONArray(model.predict(input))};
    fs.writeFileSync(path.join(dir, 'check.json'), JSON.stringify(check));
  }
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  await tf.ready();
  if (cmd === 'predict' && args.length > 0 && args.length % 3 === 0) {
    for (let i = 0; i < args.length; i += 3) await predict(args[i], args[i + 1], args[i + 2]);
  } else if (cmd === 'build' && args.length === 1) {
    await build(args[0]);
  } else {
    throw new Error('usage: tfjs_check.js predict (MODEL_DIR INPUT_JSON OUTPUT_JSON)... | build OUT_DIR');
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
