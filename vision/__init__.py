"""vision: image file -> pixels (decode, the tf.data builder) and loading a registry's Keras model.

One layer above storage, below the trainer and the dataset factory, so both see an image and
a model exactly the same way.
"""
