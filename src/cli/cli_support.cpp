#include "cli/cli_support.h"

#include <filesystem>
#include <ostream>
#include <string_view>

#include "cli/cli.h"
#include "core/json_writer.h"

namespace isoguard {

int Fail(std::ostream& err, const Error& error) {
  err << "isoguard: " << error.ToString() << "\n";
  const bool environment =
      error.kind == ErrorKind::kInternal || error.kind == ErrorKind::kUnavailable;
  return environment ? kExitInternal : kExitBadInput;
}

bool IsPostgresUrl(const std::string& db) {
  const std::string_view u = db;
  return u.starts_with("postgresql://") || u.starts_with("postgres://");
}

Result<std::unique_ptr<store::EventStore>> OpenStore(const std::string& db,
                                                     const ParseOptions& parse, bool must_exist) {
  if (must_exist && !IsPostgresUrl(db)) {
    std::string path = db;
    if (std::string_view(db).starts_with("sqlite:")) {
      path = db.substr(std::string_view("sqlite:").size());
    }
    std::error_code ec;
    if (!path.empty() && !std::filesystem::exists(path, ec)) {
      return Error::BadInput("no event store at '" + path + "'", "--db");
    }
  }
  store::StoreOptions options;
  options.parse = parse;
  auto opened = store::OpenEventStore(db, options);
  if (!opened.ok()) {
    Error e = opened.error();
    if (e.field.empty() || e.field == "db") e.field = "--db";
    return e;
  }
  return std::move(*opened);
}

std::string VerifyReportJson(const store::VerifyReport& report) {
  std::string text;
  JsonWriter w(text);
  w.BeginObject();
  w.Key("entries_checked").Integer(report.entries_checked);
  w.Key("streams_checked").Integer(report.streams_checked);
  w.Key("ok").Bool(!report.first_problem.has_value());
  w.Key("first_problem");
  report.first_problem ? w.String(*report.first_problem) : w.Null();
  w.EndObject();
  return text;
}

}  // namespace isoguard
