// Loads the rulebook from a data directory holding programs/*.toml and knowledge/*.toml.
//
// A file that fails to load gives an Error whose field names the file and the key
// ("programs/us-ipledge-2026.toml: tests.window_days") and whose message says what is wrong.
#pragma once

#include <string>

#include "core/result.h"
#include "rules/rulebook.h"

namespace isoguard {

Result<Rulebook> LoadRulebook(const std::string& data_dir);

// Loads one program file (used by LoadRulebook and by tests of bad program files).
// `display_name` is how the file is named in errors ("programs/us-ipledge-2026.toml").
Result<Program> LoadProgramFile(const std::string& path, const std::string& display_name);
Result<Program> ParseProgramToml(std::string_view toml_text, const std::string& display_name);

}  // namespace isoguard
