// A small, fast JSON text builder for isoguard's outputs (evaluations, dose plans).
// It writes straight into a string; the caller is responsible for well-formed nesting.
#pragma once

#include <string>
#include <string_view>

namespace isoguard {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& BeginObject() { return Open('{'); }
  JsonWriter& EndObject() { return Close('}'); }
  JsonWriter& BeginArray() { return Open('['); }
  JsonWriter& EndArray() { return Close(']'); }

  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Number(double value);
  JsonWriter& Integer(long long value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();

 private:
  JsonWriter& Open(char c);
  JsonWriter& Close(char c);
  void Separate();

  std::string& out_;
  bool need_comma_ = false;
};

// Appends `value` to `out` as a JSON string literal, quotes included.
void AppendJsonString(std::string& out, std::string_view value);

}  // namespace isoguard
