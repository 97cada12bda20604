// `memoryformer train` killed (SIGKILL) at chosen and at random moments, then resumed: it ends in
// the uninterrupted run's weights, bit for bit, and its curve, with no file of the killed runs
// left behind (docs/training.md, "Checkpoints"). The chosen moments come from the tool's test hook
// MEMORYFORMER_TEST_KILL_AT=<point>:<step> (tools/memoryformer/checkpoints.hpp).
#include "cli_support.hpp"
#include "test_support.hpp"

#include <memoryformer/io/checkpoint.hpp>
#include <memoryformer/io/safetensors.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace cli_test;

constexpr int kSteps = 12, kLongSteps = 40;  // the random kills need runs long enough to be hit
// Whether run()'s status says SIGKILL ended the process: as a signal, or as the shell's 128 + 9.
bool was_killed(int status) { return status == -1000 - SIGKILL || status == 128 + SIGKILL; }

std::vector<std::string> checkpointing(const std::string& data, const std::string& out, int steps = kSteps) {
  std::vector<std::string> flags = train_flags(data, out, steps);
  flags.insert(flags.end(), {"--save-every", "2"});
  return flags;
}

std::vector<std::string> resuming(std::vector<std::string> flags, const std::string& out) {
  flags.insert(flags.end(), {"--resume", out});
  return flags;
}

// Removes `out` and every file beside it whose name starts with its name.
void remove_outputs(const std::string& out) {
  const fs::path dir = fs::path(out).parent_path();
  const std::string base = fs::path(out).filename().string();
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(base, 0) == 0) fs::remove(e.path());
}

// The names of the files beside `out` that start with its name, sorted.
std::vector<std::string> outputs_of(const std::string& out) {
  const std::string base = fs::path(out).filename().string();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(fs::path(out).parent_path()))
    if (e.path().filename().string().rfind(base, 0) == 0) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// The uninterrupted run the killed ones must end in: its model file, its curve, its steps and how
// long it took.
struct Reference {
  std::string model, curve;
  int steps = kSteps;
  double seconds = 0;
};

Reference reference(const std::vector<std::string>& flags, const std::string& out, int steps,
                    const std::string& launcher = "") {
  remove_outputs(out);
  const auto start = std::chrono::steady_clock::now();
  const Result r = run(flags, launcher);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 0) << r.err;
  return {read_bytes(out), read_bytes(out + ".csv"), steps, seconds};
}

Reference reference(const std::string& data, const std::string& name, int steps = kSteps) {
  const std::string out = temp_path(name + "_straight.safetensors");
  return reference(checkpointing(data, out, steps), out, steps);
}

// `out`'s model file is the reference's byte for byte (the same weights and metadata), its curve
// has the same rows, and nothing but the model, its curve and its two newest checkpoints is left.
void expect_ends_as(const Reference& ref, const std::string& out, const std::string& what) {
  EXPECT_TRUE(read_bytes(out) == ref.model) << what << ": the model differs from the uninterrupted run's";
  EXPECT_EQ(curve_columns(read_bytes(out + ".csv")), curve_columns(ref.curve)) << what;
  const std::string base = fs::path(out).filename().string();
  const std::vector<std::string> left = {base, base + ".ckpt-" + std::to_string(ref.steps - 2),
                                         base + ".ckpt-" + std::to_string(ref.steps), base + ".csv"};
  EXPECT_EQ(outputs_of(out), left) << what << ": stale files left";
}

// A kill between any two of train's writes (before a checkpoint, between the checkpoint and the
// model, after the model, after the curve), at a step that saves and validates (6) and at one that
// only saves (8), is resumed from the newest complete checkpoint, which the tool names.
TEST(CliCheckpoints, AKillBetweenAnyTwoWritesResumesExactly) {
  const std::string data = pattern_dataset("kill_points");
  const Reference ref = reference(data, "kill_points");
  const std::string out = temp_path("kill_points.safetensors");
  struct Case {
    const char* point;
    int step, resumed_from;
  };
  for (const Case c : {Case{"before-checkpoint", 6, 4}, Case{"after-checkpoint", 6, 6}, Case{"after-model", 6, 6},
                       Case{"after-log", 6, 4}, Case{"before-checkpoint", 8, 6}, Case{"after-checkpoint", 8, 8}}) {
    const std::string what = std::string(c.point) + ":" + std::to_string(c.step);
    remove_outputs(out);
    const Result killed =
        run(checkpointing(data, out), "MEMORYFORMER_TEST_KILL_AT=" + what + " ");
    ASSERT_TRUE(was_killed(killed.status)) << what << ": status " << killed.status << ", " << killed.err;
    const Result resumed = run(resuming(checkpointing(data, out), out));
    ASSERT_EQ(resumed.status, 0) << what << ": " << resumed.err;
    EXPECT_NE(resumed.err.find("resuming at step " + std::to_string(c.resumed_from + 1) + " from " + out + ".ckpt-" +
                               std::to_string(c.resumed_from)),
              std::string::npos)
        << what << ": " << resumed.err;
    expect_ends_as(ref, out, what);
  }
}

// What a kill inside a write leaves (a temporary file) is removed at the next start, with a line
// naming it; a damaged newest checkpoint is skipped, named with why, for the one before it; a
// curve cut mid-line does not stop the resume.
TEST(CliCheckpoints, TemporariesGoAndADamagedCheckpointIsSkipped) {
  const std::string data = pattern_dataset("damaged_checkpoint");
  const Reference ref = reference(data, "damaged_checkpoint");
  const std::string out = temp_path("damaged_checkpoint.safetensors");
  remove_outputs(out);
  ASSERT_TRUE(was_killed(run(checkpointing(data, out), "MEMORYFORMER_TEST_KILL_AT=after-model:8 ").status));
  ASSERT_TRUE(fs::exists(out + ".ckpt-6") && fs::exists(out + ".ckpt-8"));
  {
    std::fstream newest(out + ".ckpt-8", std::ios::in | std::ios::out | std::ios::binary);
    newest.seekp(-3, std::ios::end);
    newest.write("XYZ", 3);  // data bytes: the checksums no longer match
  }
  for (const std::string& stale : {out + ".tmp.4242", out + ".ckpt-10.tmp.77", out + ".csv.tmp.5"})
    std::ofstream(stale) << "half a file";
  std::ofstream(out + ".csv", std::ios::app) << "10,0.00";  // a row cut by the kill
  const std::string unrelated = out + "2.tmp.99";  // another output's temporary: not ours to remove
  std::ofstream(unrelated) << "x";

  const Result resumed = run(resuming(checkpointing(data, out), out));
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  for (const std::string& line : std::vector<std::string>{
           "removed " + out + ".tmp.4242", "removed " + out + ".ckpt-10.tmp.77", "removed " + out + ".csv.tmp.5",
        "skipping checkpoint " + out + ".ckpt-8 (", "checksum", "trying " + out + ".ckpt-6",
        "resuming at step 7 from " + out + ".ckpt-6"})
    EXPECT_NE(resumed.err.find(line), std::string::npos) << line << " not in: " << resumed.err;
  EXPECT_TRUE(fs::exists(unrelated));
  fs::remove(unrelated);
  expect_ends_as(ref, out, "damaged newest checkpoint");
}

// Kills at random moments (by `timeout -s KILL` after a seeded draw from the uninterrupted run's
// duration), each followed by a resume, until a run completes: the end is the uninterrupted run's.
TEST(CliCheckpoints, RandomKillsEndInTheUninterruptedRun) {
  const std::string data = pattern_dataset("random_kills");
  const Reference ref = reference(data, "random_kills", kLongSteps);
  const std::string out = temp_path("random_kills.safetensors");
  remove_outputs(out);
  mf::detail::Rng rng(7);
  int kills = 0, status = -1;
  for (int attempt = 0; attempt < 40 && status != 0; ++attempt) {
    std::vector<std::string> args = checkpointing(data, out, kLongSteps);
    const std::vector<std::string> files = outputs_of(out);
    if (std::any_of(files.begin(), files.end(), [](const std::string& f) { return f.find(".ckpt-") != std::string::npos; }))
      args = resuming(args, out);
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.3f", ref.seconds * (0.1 + 0.8 * rng.uniform()));
    const Result r = run(args, std::string("timeout -s KILL ") + seconds + " ");
    status = r.status;
    if (was_killed(status))
      ++kills;
    else
      ASSERT_EQ(status, 0) << r.err;
  }
  ASSERT_EQ(status, 0) << "no run completed in 40 attempts";
  EXPECT_GE(kills, 1) << "no run was killed: the runs are too short for this test";
  expect_ends_as(ref, out, std::to_string(kills) + " random kills");
}

#ifdef MF_CLI_MPIEXEC
// --data-parallel under mpiexec: rank 0 writes, and a kill of rank 0 between two writes or of
// rank 1 in the middle of a step leaves a checkpoint that resumes, under mpiexec again, to the
// uninterrupted data-parallel run.
TEST(CliCheckpoints, DataParallelKillsResumeExactly) {
  const std::string data = pattern_dataset("dp_kills");
  std::vector<std::string> parallel = {"--data-parallel", "--threads", "1"};
  const std::string straight = temp_path("dp_kills_straight.safetensors"), out = temp_path("dp_kills.safetensors");
  auto flags = [&](const std::string& o) {
    std::vector<std::string> f = checkpointing(data, o);
    f.insert(f.end(), parallel.begin(), parallel.end());
    return f;
  };
  const Reference ref = reference(flags(straight), straight, kSteps, mpiexec(2));
  for (const std::string what : {"after-checkpoint:6", "rank1-step:9"}) {
    remove_outputs(out);
    const Result killed = run(flags(out), "MEMORYFORMER_TEST_KILL_AT=" + what + " " + mpiexec(2));
    ASSERT_NE(killed.status, 0) << what << ": " << killed.err;
    const Result resumed = run(resuming(flags(out), out), mpiexec(2));
    ASSERT_EQ(resumed.status, 0) << what << ": " << resumed.err;
    EXPECT_NE(resumed.err.find("resuming at step "), std::string::npos) << resumed.err;
    expect_ends_as(ref, out, what);
  }
}
#endif

}  // namespace
