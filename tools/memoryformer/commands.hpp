// The memoryformer tool's commands, one room per group (main.cpp's table lists them): each parses
// its flags from argv (argv[0] is the command's name) and returns the exit status, or throws
// (common/errors.hpp) for main to report.
#pragma once

namespace tool {

// inference.cpp
int run_logits(int argc, char** argv);
int run_generate(int argc, char** argv);
// files.cpp
int run_inspect(int argc, char** argv);
int run_convert(int argc, char** argv);
int run_init(int argc, char** argv);
// text.cpp
int run_tokenizer_train(int argc, char** argv);
int run_tokenize(int argc, char** argv);
// training.cpp
int run_train(int argc, char** argv);
int run_eval(int argc, char** argv);

}  // namespace tool
