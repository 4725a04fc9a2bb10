// The isoguard command, callable in-process (main.cpp and the scenario tests use it).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace isoguard {

// Exit codes of the contract.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitBadInput = 2;

// Runs `isoguard ARGS...` (args exclude the program name), writing to `out` and `err`.
// Returns the exit code.
int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
// The same, reading what a command asks for (erase's confirmation) from `in`; the form above
// reads std::cin.
int RunCli(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
           std::ostream& err);

}  // namespace isoguard
