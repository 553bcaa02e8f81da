const cfg = window.APP_CONFIG;
document.title += ` (${cfg.customerId})`;
console.log("app started for", cfg.customerId, "against", cfg.apiUrl);
