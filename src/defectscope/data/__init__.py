"""Data layer: discovery, VOC parsing, image decoding, TFRecords and the tf.data pipeline."""
