// Reads SQL statements (JSON list) on stdin; prints the parse errors of each as JSON.
const { parseToAst } = require("@questdb/sql-parser");
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((sql) => {
    const r = parseToAst(sql);
    return { sql, errors: r.errors.map((e) => String(e.message || e)), statements: r.ast.length };
  });
  process.stdout.write(JSON.stringify(out));
});
