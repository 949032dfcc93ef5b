"""Training: configuration, run folders, cached features, both phases and tf.distribute."""

from defectscope.core.tf_import import prefer_onednn

# before any module of this package imports TensorFlow (a training step's backward
# convolutions run 1.6-1.9x faster with oneDNN on CPUs where TensorFlow leaves it off)
prefer_onednn(True)
