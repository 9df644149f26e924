"""The relay benchmark's report: its summary table, and a tiny run on the real Postern daemon."""

import json

from bench.relay import Workload, main, summarise, table


def run(server, workload, rate, cpu, pss=50 << 20, ok=True):
    return {"server": server, "workload": workload.label, "size": workload.size, "sessions": workload.sessions,
            "keep_connections": workload.keep, "recipients": workload.recipients, "ok": ok,
            "msgs_per_s": rate, "cpu_ms_per_msg": cpu, "peak_pss": pss, "peak_rss": 2 * pss}


def test_table_has_a_row_per_workload_with_both_servers_and_their_ratio():
    small, connector = Workload(2048, 1), Workload(76800, 20, True, 3)
    results = [run("postfix", small, 300.0, 2.5), run("postern", small, 150.0, 4.0),
               run("postfix", connector, 200.0, 3.6), run("postern", connector, 250.0, 3.0)]
    lines = table(summarise(results)).splitlines()
    assert len(lines) == 4 and "CPU ms/msg Postern" in lines[0] and "peak PSS" in lines[0]
    assert lines[2].startswith("2 KB, 1 session ") and " 0.50 " in lines[2] and "4.00" in lines[2]
    assert lines[3].startswith("75 KB, 20 sessions, kept connections, 3 rcpts") and " 1.25 " in lines[3]


def test_table_takes_medians_over_rounds_and_says_which_failed():
    small = Workload(2048, 20)
    results = [run("postern", small, rate, cpu) for rate, cpu in ((100.0, 5.0), (300.0, 4.0), (200.0, 9.0))]
    results.append(run("postern", small, None, None, ok=False))
    row = summarise(results)[0]
    assert (row["msgs_per_s"], row["cpu_ms_per_msg"], row["runs"], row["failed"]) == (200.0, 5.0, 4, 1)
    line = table(summarise(results)).splitlines()[2]
    assert "200.0 (100-300) [1 failed]" in line and line.split("|")[3].strip() == "-"  # no ratio without Postfix


def test_a_small_run_against_the_real_daemon_prints_every_figure(tmp_path, capsys):
    output = tmp_path / "result.json"
    code = main(["--only", "postern", "--messages", "30", "--repeat", "1", "--sizes", "", "--connector-size", "8k",
                 "--latency-messages", "40", "--restart-messages", "100", "--connections", "40",
                 "--quiet-wait", "0", "--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = printed[printed.index("CPU and memory:"):]
    assert "8 KB, 20 sessions, kept connections, 3 rcpts" in summary
    assert "latency, end of DATA to 250 (20 sessions, 2 KB, 40 messages): postern p50" in summary
    assert "restart with 100 queued messages" in summary and "first 250 after" in summary
    assert "memory at 40 connections after EHLO" in summary and "postern RSS" in summary

    report = json.loads(output.read_text())
    [result] = report["results"]
    assert result["ok"] and result["recipients"] == 3 and result["keep_connections"]
    assert result["sink_total"] == 30 * result["sink_deliveries_per_message"]  # nothing lost, nothing twice
    assert result["cpu_ms_per_msg"] > 0 and result["peak_pss"] > 0
    assert report["latency"]["postern"]["messages"] == 40
    assert report["connections"]["postern"]["alive"] == 40
