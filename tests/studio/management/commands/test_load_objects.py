"""studio.management.commands.load_objects: JSONL and CSV loading, bad lines skipped, the HNSW index kept."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from studio.catalogue import embedding, services
from studio.models import Object, ObjectPart
from tests.studio.catalogue.support import hnsw_index_definition, random_unit
from tests.support import unit_vector


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_load(path: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("load_objects", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_load_objects_jsonl(db, tmp_path):
    rng = np.random.default_rng(3)
    vectors = random_unit(rng, 4).round(6).tolist()
    lines = [
        json.dumps({"object_id": "v1", "payload": {"genre": "drama"}, "vector": vectors[0]}),
        "",
        '{"object_id": "broken", "vector": [1, 2',
        json.dumps({"object_id": "multi", "vectors": [vectors[1], vectors[2]], "average": True}),
        json.dumps({"object_id": "bad-dim", "vector": [0.1, 0.2]}),
        json.dumps({"object_id": "txt", "text": "A heist film set in Lisbon."}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"object_id": "v1", "payload": {"genre": "comedy"}, "vector": vectors[3]}),  # later line wins
    ]
    services.drop_hnsw_index()
    out, err = run_load(write(tmp_path / "objects.jsonl", "\n".join(lines) + "\n"))

    assert sorted(Object.objects.values_list("object_id", flat=True)) == ["multi", "txt", "v1"]
    v1 = Object.objects.get(object_id="v1")
    assert v1.payload == {"genre": "comedy"}
    assert np.allclose(v1.parts.get().vector, vectors[3], atol=1e-6)
    multi = [(p.index, p.is_average) for p in ObjectPart.objects.filter(object__object_id="multi").order_by("index")]
    assert multi == [(0, False), (1, False), (2, True)]
    txt = ObjectPart.objects.get(object__object_id="txt")
    assert np.allclose(txt.vector, embedding.embed_text("A heist film set in Lisbon."), atol=1e-5)
    assert "skipped line 3: not JSON" in err
    assert "skipped line 5 (bad-dim): vector: must have 384 dimensions" in err
    assert "skipped line 7" in err and "JSON object" in err
    assert "skipped 3" in out
    assert hnsw_index_definition() is not None  # rebuilt after the load


def test_load_objects_csv(db, tmp_path):
    vector = json.dumps(unit_vector(0.6, 0.8))
    rows = [
        "object_id,text,vector,payload,genre",
        f'c1,,"{vector.replace(chr(34), chr(34) * 2)}","{{""year"": 1999}}",drama',
        "c2,A documentary about bees.,,,nature",
        'c3,,"[1, 2",,x',
        "c4,,,,empty",
        'c5,,,"[1]",x',
    ]
    out, err = run_load(write(tmp_path / "objects.csv", "\n".join(rows) + "\n"))
    assert sorted(Object.objects.values_list("object_id", flat=True)) == ["c1", "c2"]
    c1 = Object.objects.get(object_id="c1")
    assert c1.payload == {"year": 1999, "genre": "drama"}
    assert np.allclose(c1.parts.get().vector[:2], [0.6, 0.8])
    c2 = Object.objects.get(object_id="c2")
    assert c2.text == "A documentary about bees." and c2.payload == {"genre": "nature"}
    assert "line 4: vector is not JSON" in err
    assert "line 5 (c4): one of text, vector or vectors is required" in err
    assert "line 6: payload must be a JSON object" in err
    assert hnsw_index_definition() is not None


def test_load_objects_keep_index_and_missing_file(db, tmp_path):
    path = write(tmp_path / "one.jsonl", json.dumps({"object_id": "k", "vector": unit_vector(1.0)}) + "\n")
    out, _ = run_load(path, "--keep-index")
    assert "index built" not in out
    assert hnsw_index_definition() is not None
    assert Object.objects.filter(object_id="k").exists()
    with pytest.raises(CommandError):
        run_load(tmp_path / "missing.jsonl")


def test_load_objects_skips_a_line_that_is_not_utf8(db, tmp_path):
    good = json.dumps({"object_id": "u", "vector": unit_vector(1.0)}).encode()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + b"\n" + b'{"object_id": "caf\xe9", "vector": [1]}\n')
    out, err = run_load(path)
    assert list(Object.objects.values_list("object_id", flat=True)) == ["u"]
    assert "skipped line 2: not JSON" in err


def test_load_objects_refuses_a_csv_that_is_not_utf8_and_keeps_the_index(db, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"object_id,text\nx,caf\xe9\n")
    with pytest.raises(CommandError, match="UTF-8"):
        run_load(path)
    assert hnsw_index_definition() is not None
