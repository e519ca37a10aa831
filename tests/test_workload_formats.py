"""Trace readers: format detection, every format's fields, and one clear line-numbered error per bad row.

Malformed rows are written into temporary copies of the bundled files (first 40 rows), or into
small files in the published layout for formats with nothing bundled (BurstGPT, generic CSV/JSONL).
"""
import gzip
import json
import re
import warnings

import numpy as np
import pytest

from simserve.errors import ConfigError, WorkloadError
from simserve.workload import BUNDLED_DIR, WorkloadWarning, load_trace
from simserve.workload.readers import Columns, datetime_s, detect_format

BAD_LINE = 17


def head_lines(bundled_name: str, count: int = 40) -> list[str]:
    with gzip.open(BUNDLED_DIR / bundled_name, "rt", newline="") as f:
        return [next(f) for _ in range(count)]


def write(path, lines, gz=False):
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", newline="") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def expect_error(path, pattern, **kwargs):
    with pytest.raises(WorkloadError) as info:
        load_trace(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(pattern, message), message
    return message


# ------------------------------------------------------------------ Azure
def azure_copy(tmp_path, replace_row=None, gz=True):
    lines = head_lines("AzureLLMInferenceTrace_conv.csv.gz")
    if replace_row is not None:
        lines[BAD_LINE - 1] = replace_row + "\n"
    return write(tmp_path / "AzureLLMInferenceTrace_conv.csv.gz", lines, gz=gz)


def test_azure_copy_reads_with_its_own_times(tmp_path):
    data = load_trace(azure_copy(tmp_path))
    assert data.fmt == "azure" and len(data) == 39
    assert data.arrival_s[0] == 0.0 and np.all(np.diff(data.arrival_s) >= 0)
    # 2023-11-16 18:15:46.6805900 -> 18:15:50.9951690: 4.314579 s (7-digit fractions kept to 1 us)
    assert data.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)


@pytest.mark.parametrize("row, reason", [
    ("2023-11-16 18:15:59.0000000,374,-3", r"GeneratedTokens is -3, must be a positive integer"),
    ("2023-11-16 18:15:59.0000000,0,44", r"ContextTokens is 0, must be a positive integer"),
    ("2023-11-16 18:15:59.0000000,abc,44", r"ContextTokens is 'abc', not an integer"),
    ("2023-11-16 18:15:59.0000000,12.5,44", r"ContextTokens is '12.5', not an integer"),
    ("yesterday,374,44", r"TIMESTAMP is 'yesterday', not a date-time"),
    ("2023-11-16 18:15:59.0000000,374", r"2 fields, expected 3"),
])
def test_azure_bad_row_names_file_line_and_reason(tmp_path, row, reason):
    expect_error(azure_copy(tmp_path, row), rf"^AzureLLMInferenceTrace_conv\.csv: line {BAD_LINE}: {reason}")


def test_azure_plain_csv_and_gzip_read_the_same(tmp_path):
    gz = load_trace(azure_copy(tmp_path, gz=True))
    (tmp_path / "plain").mkdir()
    plain = load_trace(azure_copy(tmp_path / "plain", gz=False))
    assert np.array_equal(gz.arrival_s, plain.arrival_s) and np.array_equal(gz.isl, plain.isl)


def test_azure_2024_stamps_with_time_zone_parse():
    """The 2024 week-long files write `+00:00` offsets; both layouts give the same clock."""
    naive = datetime_s("2024-05-12 00:00:01.5000000", "TIMESTAMP", "x")
    zoned = datetime_s("2024-05-12 00:00:01.500000+00:00", "TIMESTAMP", "x")
    assert zoned == pytest.approx(naive, abs=1e-6)


def test_empty_and_header_only_files(tmp_path):
    expect_error(write(tmp_path / "empty.csv", []), r"^empty\.csv: empty file$")
    header_only = write(tmp_path / "h.csv", ["TIMESTAMP,ContextTokens,GeneratedTokens"])
    expect_error(header_only, r"^h\.csv: no requests")


def test_unsorted_trace_is_sorted_with_warning_or_refused_when_strict(tmp_path):
    lines = head_lines("AzureLLMInferenceTrace_conv.csv.gz", 6)
    in_order = load_trace(write(tmp_path / "in_order.csv", lines))
    lines[3], lines[4] = lines[4], lines[3]          # rows on lines 4 and 5 swapped
    path = write(tmp_path / "swapped.csv", lines)
    with pytest.warns(WorkloadWarning, match=r"not sorted .* first at line 5"):
        data = load_trace(path)
    assert np.all(np.diff(data.arrival_s) >= 0)
    assert np.array_equal(data.isl, in_order.isl)   # lengths travel with their stamps
    assert np.array_equal(data.arrival_s, in_order.arrival_s)
    expect_error(path, r"^swapped\.csv: line 5: timestamp goes back in time", strict=True)


# ------------------------------------------------------------------ Mooncake
def test_mooncake_fields_and_prefix_blocks(tmp_path):
    path = write(tmp_path / "mc.jsonl", head_lines("conversation_trace.jsonl.gz"))
    data = load_trace(path)
    assert data.fmt == "mooncake"
    assert data.prefix_hashes[0] == tuple(range(14)) and data.isl[0] == 6758
    # hash_ids are 512-token blocks: ceil(input_length / 512) of them (Mooncake README)
    assert all(len(h) == -(-i // 512) for h, i in zip(data.prefix_hashes, data.isl))


@pytest.mark.parametrize("record, reason", [
    ('{"timestamp": 0, "input_length": 100, "output_length": -3, "hash_ids": [0]}',
     r"output_length is -3, must be a positive integer"),
    ('{"timestamp": 0, "input_length": 100, "hash_ids": [0]}', r"missing key\(s\) output_length"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [0, "x"]}',
     r"hash_ids is .*not a list of integers"),
    ('{"timestamp": 0, "input_length": 100, ', r"not valid JSON"),
    ('{"timestamp": "soon", "input_length": 100, "output_length": 5}', r"timestamp is 'soon', not a number"),
])
def test_mooncake_bad_record(tmp_path, record, reason):
    lines = head_lines("conversation_trace.jsonl.gz")
    lines[BAD_LINE - 1] = record
    path = write(tmp_path / "conversation_trace.jsonl.gz", lines, gz=True)
    expect_error(path, rf"^conversation_trace\.jsonl: line {BAD_LINE}: {reason}")


# ------------------------------------------------------------------ Vidur length-only CSV
def test_vidur_length_file_has_no_times_and_checks_rows(tmp_path):
    lines = head_lines("sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz")
    data = load_trace(write(tmp_path / "ok.csv", lines))
    assert data.fmt == "vidur" and data.arrival_s is None and data.isl[0] == 74 and data.osl[0] == 918
    lines[BAD_LINE - 1] = "290,-3,287,0.1\n"
    expect_error(write(tmp_path / "sharegpt.csv", lines),
                 rf"^sharegpt\.csv: line {BAD_LINE}: num_decode_tokens is -3, must be a positive integer")


def test_vidur_arrived_at_column_gives_times(tmp_path):
    path = write(tmp_path / "splitwise_conv.csv",
                 ["arrived_at,num_prefill_tokens,num_decode_tokens", "0.5,10,2", "1.5,20,3", "3.0,30,4"])
    data = load_trace(path)
    assert data.arrival_s.tolist() == [0.0, 1.0, 2.5]


# ------------------------------------------------------------------ BurstGPT (layout of HPMLL/BurstGPT)
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"


def burst_rows():
    models = ["ChatGPT", "GPT-4"]
    logs = ["Conversation log", "API log"]
    return [f"{5 + 2 * i},{models[i % 2]},{100 + i},{10 + i},{110 + 2 * i},{logs[(i // 2) % 2]}" for i in range(30)]


def test_burstgpt_detected_and_filtered_by_model_and_log_type(tmp_path):
    path = write(tmp_path / "BurstGPT_1.csv", [BURST_HEADER] + burst_rows())
    assert detect_format(path, has_columns=False) == "burstgpt"
    everything = load_trace(path)
    assert len(everything) == 30 and everything.arrival_s[-1] == 58.0
    with pytest.warns(WorkloadWarning, match="matching the filters"):
        gpt4_api = load_trace(path, model="gpt-4", log_type="API log")
    # i odd (GPT-4) and (i // 2) odd (API log): i = 3, 7, 11, ... -> 100 + i
    assert gpt4_api.isl.tolist() == [100 + i for i in range(30) if i % 2 == 1 and (i // 2) % 2 == 1]
    with pytest.raises(WorkloadError, match="no rows match the filters"):
        load_trace(path, model="llama")


def test_burstgpt_failed_requests_are_skipped_or_refused(tmp_path):
    rows = burst_rows()
    rows[4] = "13,ChatGPT,104,0,104,Conversation log"     # line 6: a failed request, 0 response tokens
    path = write(tmp_path / "b.csv", [BURST_HEADER] + rows)
    with pytest.warns(WorkloadWarning, match="skipped 1 failed"):
        assert len(load_trace(path)) == 29
    expect_error(path, r"^b\.csv: line 6: a request with 0 response tokens", strict=True)


def test_burstgpt_bad_row(tmp_path):
    rows = burst_rows()
    rows[BAD_LINE - 2] = "37,ChatGPT,-3,10,7,Conversation log"
    path = write(tmp_path / "BurstGPT.csv.gz", [BURST_HEADER] + rows, gz=True)
    expect_error(path, rf"^BurstGPT\.csv: line {BAD_LINE}: Request tokens is -3, must be a positive integer")


def test_filters_on_a_format_without_those_columns_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="apply to BurstGPT"):
        load_trace(azure_copy(tmp_path), model="ChatGPT")


# ------------------------------------------------------------------ generic CSV / JSONL with a mapping
def test_generic_csv_with_column_mapping_and_ms_times(tmp_path):
    path = write(tmp_path / "mine.csv", ["t_ms,prompt,completion"] + [f"{1000 * i},{i + 1},{2 * i + 1}" for i in range(20)])
    assert detect_format(path, has_columns=False) == "csv"
    with pytest.raises(ConfigError, match="needs workload.columns"):
        load_trace(path)
    cols = Columns(isl="prompt", osl="completion", arrival="t_ms", time_unit="ms")
    data = load_trace(path, columns=cols)
    assert data.arrival_s[-1] == 19.0 and data.isl[-1] == 20 and data.osl[-1] == 39
    lines = path.read_text().splitlines()
    lines[BAD_LINE - 1] = "16000,7,zero"
    expect_error(write(tmp_path / "mine2.csv", lines), rf"^mine2\.csv: line {BAD_LINE}: completion is 'zero', not an integer",
                 columns=cols)
    expect_error(path, r"^mine\.csv: line 1: csv header lacks column\(s\) nope",
                 columns=Columns(isl="nope", osl="completion"))


def test_generic_jsonl_with_mapping_and_blank_lines(tmp_path):
    records = [json.dumps({"at": i * 0.5, "in": 10 + i, "out": 3}) for i in range(20)]
    records.insert(5, "")      # a blank line still counts as a line
    cols = Columns(isl="in", osl="out", arrival="at")
    data = load_trace(write(tmp_path / "reqs.jsonl", records), columns=cols)
    assert len(data) == 20 and data.arrival_s[-1] == 9.5
    records[BAD_LINE - 1] = json.dumps({"at": 1.0, "in": 0, "out": 3})
    expect_error(write(tmp_path / "reqs2.jsonl", records), rf"^reqs2\.jsonl: line {BAD_LINE}: in is 0, must be a positive",
                 columns=cols)


def test_unknown_path_lists_bundled_traces():
    with pytest.raises(WorkloadError, match=r"trace not found: nope\.csv \(bundled traces: .*AzureLLMInferenceTrace_conv"):
        load_trace("nope.csv")


def test_bundled_names_resolve_with_or_without_folder_and_gz():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("workloads/AzureLLMInferenceTrace_code.csv.gz", "AzureLLMInferenceTrace_code.csv"):
            assert len(load_trace(name, max_rows=5)) == 5


def test_fractional_json_length_is_refused_not_truncated(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
                    '{"timestamp": 1000, "input_length": 10.5, "output_length": 5}\n')
    with pytest.raises(WorkloadError, match="line 2"):
        load_trace(path, fmt="mooncake")


def test_csv_with_a_byte_order_mark_is_detected(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_bytes(b"\xef\xbb\xbfTIMESTAMP,ContextTokens,GeneratedTokens\n"
                     b"2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n")
    assert len(load_trace(path).isl) == 2
