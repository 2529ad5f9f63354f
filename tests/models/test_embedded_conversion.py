"""The embedded model's conversion parses its GGUF file once for the tokenizer, the config and the weights."""

import gguf
import numpy as np

from kick_models.embedded import one_gguf_parse


def test_one_parse_serves_every_reader_of_the_file_and_the_reader_is_restored(tmp_path):
    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = gguf.GGUFReader
    with one_gguf_parse():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # transformers passes a str
        assert isinstance(first, original) and [t.name for t in first.tensors] == ["w"]
    assert gguf.GGUFReader is original
    assert original(path) is not first
