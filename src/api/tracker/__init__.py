"""The tracker script that sites paste (script.js) and its route, GET /js/script.js."""
