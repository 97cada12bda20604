// memoryformer: model files (docs/method.md §5 safetensors) from the command line.
//
//   memoryformer logits   --weights M --tokens 3,1,4 --out L.safetensors
//   memoryformer generate --weights M (--prompt TEXT | --tokens 3,1,4) [--max-new N] [--temperature T]
//                         [--top-k K] [--seed S]
//   memoryformer inspect  M
//   memoryformer convert  --tables bf16|int8|fp32 --weights IN --out OUT
//   memoryformer init     --config tiny|small|base|FILE.json --tables fp32|bf16|int8 --seed 1 --out M
//
// Real text (docs/training.md, "Subword text"), SentencePiece needed for the first two:
//   memoryformer tokenizer-train --input corpus.txt --vocab-size 4000 --out tok.model
//   memoryformer tokenize --tokenizer tok.model --input corpus.txt --out data/ --val-fraction 0.1
//   memoryformer train    --data data/ --arch memoryformer --steps 1000 --out M [--resume M]
//   memoryformer eval     --weights M --data data/ [--split val]
//   memoryformer generate --weights M --tokenizer tok.model --prompt TEXT [--top-p P]
//
// Every command is a thin layer over the library: io::load_model, Model::forward, generate,
// io::save_model and the safetensors reader and writer; `memoryformer COMMAND --help` lists flags.
// Without --tokenizer, text is tokenised as bytes (vocab 256), as examples/train_char_lm does;
// models of another vocab take a --tokenizer or token ids (--tokens).
//
// Exit status, by the kind of the error (its type, never its message):
//   0  success
//   1  any other failure at run time
//   2  a bad command line (unknown flag, malformed value, token outside the model's vocabulary)
//   3  a file-system error (mf::FileError): a file that cannot be opened, read, mapped or written
//   4  a malformed file (mf::FormatError): not safetensors, a tensor or metadata entry that breaks
//      the format or docs/method.md §5, a checksum mismatch (inspect included)
// Messages go to stderr and name the argument, the value and what was expected. Output files are
// written atomically, and only once everything they hold has been computed.
//
// This file holds the command table, the exit status and the MPI reporting; the commands live in
// rooms by group (inference.cpp, files.cpp, text.cpp, training.cpp) over common/ (flags, model
// flags, model files, corpus, tokenizer, the training loop).
#include "commands.hpp"
#include "common/cli.hpp"
#include "common/errors.hpp"
#include "common/freed_memory.hpp"
#include "common/mpi_world.hpp"

#include <memoryformer/errors.hpp>

#include <iostream>
#include <string>

namespace tool {
namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"logits", run_logits, "full-sequence logits of a token list, to a safetensors file"},
    {"generate", run_generate, "continue a prompt (text or token ids) with the KV cache"},
    {"inspect", run_inspect, "config, tensors, sizes and checksum status of a file"},
    {"convert", run_convert, "store a model's tables as bf16 or int8"},
    {"init", run_init, "write a randomly initialised model of any size, streamed to disk"},
    {"tokenizer-train", run_tokenizer_train, "learn a SentencePiece subword vocabulary from text"},
    {"tokenize", run_tokenize, "turn text into a token dataset folder (train.bin, val.bin, meta.json)"},
    {"train", run_train, "train a language model on a token dataset, with checkpoints"},
    {"eval", run_eval, "loss, perplexity and bits per byte of a model on a dataset split"},
};

std::string usage() {
  std::string s = "usage: memoryformer COMMAND [flags]   (memoryformer COMMAND --help for its flags)\n";
  for (const Command& c : kCommands) {
    std::string name = std::string("  ") + c.name;
    name.resize(19, ' ');
    s += name + c.summary + "\n";
  }
  if (!MF_HAVE_SENTENCEPIECE)
    s += "tokenizer-train, tokenize and generate --tokenizer need SentencePiece, which this build lacks\n";
  return s +
         "exit status: 0 success, 1 other failure, 2 bad command line, 3 file-system error (a file that "
         "cannot be opened, read or written), 4 malformed file (bad format, metadata or checksum)\n";
}


}  // namespace
}  // namespace tool

int main(int argc, char** argv) {
  using namespace tool;
  keep_freed_memory();  // training and prefill allocate step-sized activations again and again
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << usage();
    return 0;
  }
  const Command* found = nullptr;
  for (const Command& c : kCommands)
    if (command == c.name) found = &c;
  if (found == nullptr) {
    std::cerr << "memoryformer: command = " << in_quotes(command)
              << ", expected one of logits, generate, inspect, convert, init, tokenizer-train, tokenize, train, eval\n"
              << usage();
    return kUsage;
  }
  // Under mpirun (--shard), an error every rank threw alike (distributed::DistributedError) is
  // printed by rank 0 and each rank exits with its status; any other error may have left the other
  // ranks waiting in a collective, so this rank prints it and ends the whole job.
  const auto report = [&](const char* what, int status, bool agreed = false) {
#if MF_HAVE_MPI
    if (mpi_started() && world().size() > 1) {
      if (agreed) {
        if (world().rank() == 0) std::cerr << "memoryformer " << command << ": " << what << '\n';
        return status;
      }
      std::cerr << "memoryformer " << command << " (rank " << world().rank() << " of " << world().size()
                << "): " << what << std::endl;
      world().abort(status);
    }
#else
    (void)agreed;
#endif
    std::cerr << "memoryformer " << command << ": " << what << '\n';
    return status;
  };
  try {
    return found->run(argc - 1, argv + 1);
  } catch (const UsageError& e) {  // the same on every rank of an MPI job: printed by rank 0
#if MF_HAVE_MPI
    if (mpi_started() && world().rank() != 0) return kUsage;
#endif
    std::cerr << "memoryformer " << command << ": " << e.what() << "\n(see memoryformer " << command
              << " --help)\n";
    return kUsage;
  } catch (const RunError& e) {
    return report(e.what(), e.status(), e.agreed());
  } catch (const mf::Error& e) {  // one no step wrapped with for_argument
    return report(e.what(), status_of(e));
  } catch (const std::exception& e) {
    return report(e.what(), kFailure);
  }
}
