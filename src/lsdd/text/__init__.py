"""Text: corpora on disk (``corpus``), tokenizers saved beside the model (``tokenizer``), the evaluator language
model (``evaluator``) and the text data source for training (``source``)."""
